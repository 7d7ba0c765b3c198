"""Hydra's launcher lines on the console, in the numbering our job lines use.

Hydra's joblib launcher numbers each batch's jobs from `#0`, while the jobs themselves (`hydra.job.num`, our
`[job N]` prefix) count across the batches of a search; it also prints a long `Joblib.Parallel(...)` line.
"""

from __future__ import annotations

import logging
import re

LAUNCHERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)
JOB_LINE = re.compile(r"\t#\d+ : (.*)", re.DOTALL)
INTERNAL = ("trial.",)
"""Overrides a search gives its jobs for itself (the study's storage among them): not shown."""


class JobLines(logging.Filter):
    """Number the launchers' job lines `[job N]` across batches, in launch order (which is the job numbers'
    order), without the internal overrides; drop the Joblib.Parallel line."""

    def __init__(self) -> None:
        super().__init__()
        self.launched = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Joblib.Parallel("):
            return False
        line = JOB_LINE.match(message)
        if line is not None:
            shown = " ".join(o for o in line[1].split(" ") if not o.startswith(INTERNAL))
            record.msg, record.args = f"\t[job {self.launched}] {shown}", ()
            self.launched += 1
        return True


def number_job_lines() -> None:
    """Put one JobLines on every launcher's logger (once: a second sweep in the same process starts over)."""
    lines = JobLines()
    for name in LAUNCHERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, JobLines)]:
            logger.removeFilter(old)
        logger.addFilter(lines)
