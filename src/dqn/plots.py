"""Figures logged with a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curve(history: Mapping[str, Sequence[tuple[int, float]]], path: Path, window: int = 20) -> Path:
    """Episode returns (raw and a moving mean) and greedy evaluation means against env steps."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    episodes = history.get("episode_return", [])
    if episodes:
        steps, returns = np.array(episodes).T
        ax.plot(steps, returns, color="tab:blue", alpha=0.25, linewidth=0.8, label="episode return")
        if len(returns) >= window:
            mean = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], mean, color="tab:blue", label=f"episode return, mean of {window}")
    evals = history.get("eval_return_mean", [])
    if evals:
        steps, means = np.array(evals).T
        std = np.array([v for _, v in history.get("eval_return_std", [(0, 0.0)] * len(evals))])
        ax.plot(steps, means, "o-", color="tab:orange", label="greedy evaluation mean")
        ax.fill_between(steps, means - std, means + std, color="tab:orange", alpha=0.2)
    ax.axhline(200, color="grey", linestyle="--", linewidth=0.8, label="solved (200)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
