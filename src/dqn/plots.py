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


def sweep_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> Path:
    """A sweep's groups: IQM of greedy evaluation means against env steps, with a CI band.

    `curves` maps each group to (steps, iqm, ci_low, ci_high), e.g. `dqn.summary.iqm_curves`' Curve tuples.
    """
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for group, (steps, iqm, low, high) in curves.items():
        (line,) = ax.plot(steps, iqm, "o-", markersize=3, label=group)
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    ax.axhline(200, color="grey", linestyle="--", linewidth=0.8, label="solved (200)")
    if not curves:
        ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return, IQM over seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # outside: never over the data
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sweep_finals(finals: Mapping[str, Sequence[float]], iqms: Mapping[str, float], path: Path) -> Path:
    """Every seed's final return per group, one dot each, with the group's IQM marked.

    The dots show what a summary hides: a group split between solved seeds and seeds stuck in a local
    optimum (hovering, crashing) looks very different from one whose seeds all land near the IQM.
    """
    groups = list(finals)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.5 * max(len(groups), 1)))
    jitter = np.random.default_rng(0)  # fixed, so the same sweep draws the same figure
    for row, group in enumerate(groups):
        values = np.asarray(finals[group], dtype=float)
        ax.scatter(values, row + jitter.uniform(-0.15, 0.15, values.size), s=18, alpha=0.7, color="tab:blue")
        if group in iqms:
            ax.plot([iqms[group]] * 2, [row - 0.3, row + 0.3], color="tab:red", linewidth=2)
    ax.plot([], [], color="tab:red", linewidth=2, label="IQM")
    ax.axvline(200, color="grey", linestyle="--", linewidth=0.8, label="solved (200)")
    if not groups:
        ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks(range(len(groups)), groups, fontsize="small")
    ax.set_ylim(max(len(groups), 1) - 0.5, -0.5)  # best group on top
    ax.set_xlabel("final greedy evaluation return, one dot per seed")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
