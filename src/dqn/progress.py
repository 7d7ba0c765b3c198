"""Progress on the console: a tqdm bar on a terminal, a plain log line every few seconds elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping

from tqdm import tqdm

log = logging.getLogger("dqn")


class Progress:
    """Fed the same `(metrics, step)` the tracker gets; shows episodes, return, epsilon, steps/s."""

    def __init__(self, total_steps: int | None, every_seconds: float = 10.0) -> None:
        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True) if sys.stderr.isatty() else None
        self.every_seconds, self.last_line = every_seconds, time.monotonic()
        self.step, self.episodes, self.fields = 0, 0, {}

    def update(self, metrics: Mapping[str, float], step: int) -> None:
        if "episode_return" in metrics:
            self.episodes += 1
            self.fields.update(
                episodes=self.episodes,
                ret=f"{metrics['episode_return']:.0f}",
                eps=f"{metrics['epsilon']:.2f}",
                sps=f"{metrics['steps_per_second']:.0f}",
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
        elif time.monotonic() - self.last_line >= self.every_seconds:
            self.last_line = time.monotonic()
            log.info("step %d: %s", step, " ".join(f"{k}={v}" for k, v in self.fields.items()))
        self.step = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
