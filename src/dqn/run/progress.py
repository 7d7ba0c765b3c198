"""Progress on the console: a tqdm bar on a terminal, a plain status line every few seconds elsewhere.

Both are fed the same `(metrics, step)` the tracker gets, so a resumed run continues its own counts.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("dqn")


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def drawable() -> bool:
    """Whether a bar can be drawn: stderr is a terminal that reports a width (a pseudo-terminal may say 0
    columns, and tqdm then draws nothing; the status lines are shown instead)."""
    try:
        return sys.stderr.isatty() and os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError):  # no real file descriptor behind stderr
        return False


class Progress:
    """Env steps done against the budget, env steps/s, ETA, and the last episode's return and epsilon.

    On a terminal a tqdm bar, with log lines written through it so they do not break it; piped
    (a cluster's log file), a status line every `every_seconds` and one at the end, so even a short
    run shows where it got.
    """

    def __init__(self, total_steps: int | None, step: int = 0, episodes: int = 0, every_seconds: float = 30.0) -> None:
        self.total, self.step, self.episodes = total_steps, step, episodes
        self.started, self.first_step = time.monotonic(), step
        self.every_seconds, self.last_line = every_seconds, time.monotonic()
        self.fields: dict[str, str] = {}
        self.exit = ExitStack()
        self.bar = None
        self.shown: int | None = None  # the step the last status line showed
        if drawable():
            self.bar = tqdm(total=total_steps, initial=step, unit=" env steps", unit_scale=True, dynamic_ncols=True)
            self.exit.enter_context(logging_redirect_tqdm())

    def update(self, metrics: Mapping[str, float], step: int) -> None:
        if "episode_return" in metrics:
            self.episodes += 1
            self.fields.update(
                episodes=str(self.episodes), ret=f"{metrics['episode_return']:.0f}", eps=f"{metrics['epsilon']:.2f}"
            )
        if "eval_return_mean" in metrics:
            self.fields["eval"] = f"{metrics['eval_return_mean']:.0f}"
            log.info("step %d: greedy evaluation mean %.1f", step, metrics["eval_return_mean"])
        if "final_eval_return_mean" in metrics:
            log.info(
                "final evaluation of the delivered weights: mean %.1f over %d fresh episodes",
                metrics["final_eval_return_mean"],
                metrics["final_eval_episodes"],
            )
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix(self.fields, refresh=False)
        self.step = step
        if self.bar is None and time.monotonic() - self.last_line >= self.every_seconds:
            self.status()

    def status(self) -> None:
        """One line: step/total (percent), env steps/s, ETA, and the latest episode figures."""
        self.last_line, self.shown = time.monotonic(), self.step
        elapsed = self.last_line - self.started
        rate = (self.step - self.first_step) / elapsed if elapsed > 0 else 0.0
        done = f"step {self.step}"
        if self.total:
            left = f", ETA {duration((self.total - self.step) / rate)}" if rate > 0 and self.step < self.total else ""
            done = f"step {self.step}/{self.total} ({100 * self.step / self.total:.0f}%){left}"
        figures = " ".join(f"{k}={v}" for k, v in self.fields.items())
        log.info("%s, %.0f env steps/s %s", done, rate, figures)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.shown != self.step:  # not the line just printed again
            self.status()
        self.exit.close()
