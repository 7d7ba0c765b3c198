"""Figures logged with a run and with a sweep's report: every band says what it is."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LONG_NUMBER = re.compile(r"(?<==)-?\d+\.\d{5,}(?:e-?\d+)?")  # a searched lr: 0.00010206062134502272
BAND = "band: 95% bootstrap CI of the IQM over seeds\n(under 5 seeds: the seeds' min to max)"


def learning_curve(
    history: Mapping[str, Sequence[tuple[int, float]]],
    path: Path,
    window: int = 20,
    title: str = "Training run: returns against environment steps",
) -> Path:
    """Episode returns (raw and a moving mean), greedy evaluation means with their episodes' std, and the
    final evaluation of the delivered weights, against env steps."""
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
        ax.fill_between(
            steps, means - std, means + std, color="tab:orange", alpha=0.2, label="band: ± std of its episodes"
        )
    final = history.get("final_eval_return_mean", [])
    if final:
        (step, mean), (_, std) = final[-1], history.get("final_eval_return_std", [(0, 0.0)])[-1]
        episodes_played = history.get("final_eval_episodes", [(0, float("nan"))])[-1][1]
        ax.errorbar(
            step, mean, yerr=np.nan_to_num(std), fmt="*", markersize=12, color="tab:red", capsize=4,
            label=f"final evaluation of the delivered weights ({episodes_played:.0f} fresh episodes), ± std",
        )  # fmt: skip
    ax.axhline(200, color="grey", linestyle="--", linewidth=0.8, label="solved (200)")
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def short(group: str) -> str:
    """A group's name for a legend: long decimals (a search's sampled values) to 4 significant digits."""
    return LONG_NUMBER.sub(lambda number: f"{float(number.group()):.4g}", group)


def sweep_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]], path: Path, title: str
) -> Path:
    """A sweep's groups: IQM over seeds of the greedy evaluation means against env steps, with a band.

    `curves` maps each group to (steps, iqm, low, high, n_seeds), e.g. `dqn.report.statistics.iqm_curves`' Curve
    tuples: the band is the 95% bootstrap CI of the IQM from 5 seeds on, the seeds' min to max below.
    """
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for group, (steps, iqm, low, high, n_seeds) in curves.items():
        (line,) = ax.plot(steps, iqm, "o-", markersize=3, label=f"{short(group)} ({n_seeds} seeds)")
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    if curves:
        ax.fill_between([], [], [], color="grey", alpha=0.2, label=BAND)
    ax.axhline(200, color="grey", linestyle="--", linewidth=0.8, label="solved (200)")
    if not curves:
        ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return, IQM over seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")  # outside: never over the data
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # the legend outside the axes included
    plt.close(fig)
    return path


def sweep_finals(
    finals: Mapping[str, Sequence[float]],
    iqms: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    path: Path,
    title: str,
    xlabel: str = "score, one dot per seed",
) -> Path:
    """Every seed's score per group, one dot each, with the group's IQM and, where there is one, its CI.

    The dots show what a summary hides: a group split between solved seeds and seeds stuck in a local
    optimum (hovering, crashing) looks very different from one whose seeds all land near the IQM.
    """
    groups = list(finals)
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.5 * max(len(groups), 1)))
    jitter = np.random.default_rng(0)  # fixed, so the same sweep draws the same figure
    for row, group in enumerate(groups):
        values = np.asarray(finals[group], dtype=float)
        if group in intervals:
            ax.plot(intervals[group], [row, row], color="tab:red", alpha=0.3, linewidth=8, solid_capstyle="butt")
        ax.scatter(values, row + jitter.uniform(-0.15, 0.15, values.size), s=18, alpha=0.7, color="tab:blue")
        if group in iqms:
            ax.plot([iqms[group]] * 2, [row - 0.3, row + 0.3], color="tab:red", linewidth=2)
    ax.scatter([], [], s=18, alpha=0.7, color="tab:blue", label="one seed")
    ax.plot([], [], color="tab:red", linewidth=2, label="IQM over seeds")
    if intervals:
        ax.plot([], [], color="tab:red", alpha=0.3, linewidth=8, label="95% bootstrap CI of the IQM (>= 5 seeds)")
    ax.axvline(200, color="grey", linestyle="--", linewidth=0.8, label="solved (200)")
    if not groups:
        ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
    labels = [f"{short(group)} ({len(finals[group])} seeds)" for group in groups]
    ax.set_yticks(range(len(groups)), labels, fontsize="small")
    ax.set_ylim(max(len(groups), 1) - 0.5, -0.5)  # best group on top
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def grid_heatmap(
    iqms: np.ndarray,
    solved: Sequence[Sequence[str]],
    rows: tuple[str, Sequence[str]],
    columns: tuple[str, Sequence[str]],
    path: Path,
    title: str,
) -> Path:
    """A 2-key grid at a glance: each cell coloured by its seeds' IQM and annotated with it and seeds solved k/n.

    `rows` and `columns` are (key, its values); a cell without seeds is nan and left blank.
    """
    (row_key, row_levels), (column_key, column_levels) = rows, columns
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(column_levels), 1.4 + 0.9 * len(row_levels)))
    image = ax.imshow(np.ma.masked_invalid(iqms), cmap="viridis", aspect="auto")
    finite = iqms[np.isfinite(iqms)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), value in np.ndenumerate(iqms):
        if np.isfinite(value):
            color = "black" if value > middle else "white"
            text = f"{value:.0f}\n{solved[i][j]} solved"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")
    ax.set_xticks(range(len(column_levels)), [short(level) for level in column_levels])
    ax.set_yticks(range(len(row_levels)), [short(level) for level in row_levels])
    ax.set_xlabel(column_key)
    ax.set_ylabel(row_key)
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label="IQM of the seeds' scores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sensitivity_curves(
    panels: Mapping[str, tuple[Sequence[str], Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]],
    path: Path,
    title: str,
) -> Path:
    """Score against each key's values (a panel per key), one line per value of the other key and one over
    all seeds, each with its band: the sensitivity curves of Patterson, Neumann, White & White (2024).

    `panels` maps a key to (its values, {line label: (IQM, band low, band high) per value}); values sit
    evenly spaced in their order, which for a grid spaced by factors (1e-4, 3e-4, 1e-3) is a log axis.
    """
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5.5 * max(len(panels), 1), 4), squeeze=False)
    for ax, (key, (levels, lines)) in zip(axes[0], panels.items(), strict=False):
        x = np.arange(len(levels))
        for label, (iqm, low, high) in lines.items():
            pooled = label.startswith("all")
            style = {"color": "black", "linewidth": 2.5} if pooled else {"linewidth": 1.2}
            (line,) = ax.plot(x, iqm, "o-", markersize=4, label=short(label), **style)
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15 if pooled else 0.07)
        ax.axhline(200, color="grey", linestyle="--", linewidth=0.8, label="solved (200)")
        ax.set_xticks(x, [short(level) for level in levels])
        ax.set_xlabel(key)
        ax.set_ylabel("score, IQM over seeds")
        ax.legend(fontsize="x-small")
    fig.suptitle(f"{title}\n{BAND}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
