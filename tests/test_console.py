"""Hydra's launcher lines in our job numbering: the lines the joblib launcher logs, through its own logger."""

from __future__ import annotations

import logging

from dqn.run.console import number_job_lines

JOBLIB = logging.getLogger("hydra_plugins.hydra_joblib_launcher._core")


def launch(batch: list[str]) -> None:
    """What hydra_joblib_launcher logs for one batch: its Parallel line, then each job from #0."""
    JOBLIB.info("Joblib.Parallel(n_jobs=2,backend=loky,prefer=processes) is launching %d jobs", len(batch))
    for idx, overrides in enumerate(batch):
        JOBLIB.info(f"\t#{idx} : {overrides}")


def test_job_lines_count_across_batches_without_internal_overrides(caplog):
    caplog.set_level(logging.INFO, logger=JOBLIB.name)
    number_job_lines()
    launch(["seed=0 lr=0.001 trial.storage=sqlite:////x/optuna.db trial.number=0", "seed=1 lr=0.001"])
    launch(["seed=0 lr=0.0003 trial.number=1"])
    assert [r.getMessage() for r in caplog.records] == [
        "\t[job 0] seed=0 lr=0.001",
        "\t[job 1] seed=1 lr=0.001",
        "\t[job 2] seed=0 lr=0.0003",
    ]
    number_job_lines()  # a new sweep in the same process counts from 0 again, with one filter
    launch(["seed=5"])
    assert caplog.records[-1].getMessage() == "\t[job 0] seed=5" and len(JOBLIB.filters) == 1
