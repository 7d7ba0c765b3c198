"""Per-group statistics of a sweep's seeds: which configuration is best, and is the difference real.

A handful of seeds per group makes the mean fragile, so groups are ranked by the interquartile mean
(IQM) of final returns with a percentile bootstrap CI over seeds, as rliable recommends
(Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"). Plain numpy/scipy, no MLflow.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
from scipy.stats import trim_mean

SOLVED = 200.0  # LunarLander's "solved" return
HOVER = 0.5  # a seed hovers when more than this share of its final evaluation hit the time limit
RESAMPLES = 2000
RNG_SEED = 0  # the same sweep gives the same CI every time the report is made


@dataclass(frozen=True)
class SeedRun:
    """One job of a sweep. Only FINISHED runs count as seeds; `final_return` is None when it never evaluated."""

    group: str
    seed: int | None
    final_return: float | None
    final_truncated: float | None = None
    evals: Sequence[tuple[int, float, float | None]] = ()  # (env step, eval_return_mean, train_seconds)
    status: str = "FINISHED"


@dataclass(frozen=True)
class GroupStats:
    """One report row. Stats are over the seeds that evaluated; None where there is nothing to compute.

    `std` is the population std (ddof=0) of final returns; `success_rate` is the share of seeds whose final
    return is >= 200, `hover_rate` the share whose final evaluation was mostly truncated; the medians are
    over the `n_reached_200` seeds that reached 200 at some evaluation.
    """

    group: str
    n_seeds: int
    iqm: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    mean: float | None = None
    std: float | None = None
    success_rate: float | None = None
    hover_rate: float | None = None
    n_reached_200: int | None = None
    median_steps_to_200: float | None = None
    median_seconds_to_200: float | None = None
    note: str = ""


COLUMNS = tuple(field.name for field in fields(GroupStats))


class Curve(NamedTuple):
    """IQM of eval_return_mean over a group's seeds at the evaluation steps they all share, with its CI band."""

    steps: np.ndarray
    iqm: np.ndarray
    low: np.ndarray
    high: np.ndarray


def iqm(values: Iterable[float]) -> float:
    """Mean of the middle half (25% trimmed from each end), rliable's definition."""
    return float(trim_mean(np.asarray(list(values), dtype=float), 0.25))


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the IQM of each column of (seeds, k) `values`, resampling seeds with replacement.

    With one task, rliable's stratified bootstrap is exactly this; whole rows are resampled so a
    curve's points keep each seed's history together. One seed gives a CI collapsed onto its value.
    """
    values = values[np.lexsort(values.T[::-1])]  # canonical row order: the CI ignores the order runs are listed in
    n = values.shape[0]
    picks = np.random.default_rng(RNG_SEED).integers(0, n, size=(RESAMPLES, n))
    estimates = trim_mean(values[picks], 0.25, axis=1)
    tail = 50 * (1 - confidence)
    low, high = np.percentile(estimates, [tail, 100 - tail], axis=0)
    return low, high


def first_reach(evals: Sequence[tuple[int, float, float | None]]) -> tuple[int, float | None] | None:
    """(env step, train seconds) of the first evaluation at or above 200, None if none was."""
    for step, value, seconds in sorted(evals, key=lambda row: row[0]):
        if value >= SOLVED:
            return step, seconds
    return None


def summarize(runs: Iterable[SeedRun]) -> list[GroupStats]:
    """One row per group (the seed is not part of it), best IQM first, groups without evaluations last."""
    by_group: dict[str, list[SeedRun]] = defaultdict(list)
    for run in runs:
        by_group[run.group].append(run)
    rows = [group_stats(group, members) for group, members in by_group.items()]
    return sorted(rows, key=lambda row: (row.iqm is None, -(row.iqm or 0.0), row.group))


def group_stats(group: str, runs: Sequence[SeedRun]) -> GroupStats:
    finished = [run for run in runs if run.status == "FINISHED"]
    evaluated = [run for run in finished if run.final_return is not None]
    note = _note(len(finished), len(evaluated), Counter(run.status for run in runs if run.status != "FINISHED"))
    if not evaluated:
        return GroupStats(group, len(finished), note=note)
    finals = np.array([run.final_return for run in evaluated], dtype=float)
    low, high = bootstrap_ci(finals[:, None])
    truncated = np.array([run.final_truncated for run in evaluated if run.final_truncated is not None])
    reached = [hit for hit in map(first_reach, (run.evals for run in evaluated)) if hit is not None]
    seconds = [s for _, s in reached if s is not None]
    return GroupStats(
        group=group,
        n_seeds=len(finished),
        iqm=iqm(finals),
        ci_low=float(low[0]),
        ci_high=float(high[0]),
        mean=float(finals.mean()),
        std=float(finals.std(ddof=0)),
        success_rate=float(np.mean(finals >= SOLVED)),
        hover_rate=float(np.mean(truncated > HOVER)) if truncated.size else None,
        n_reached_200=len(reached),
        median_steps_to_200=float(np.median([step for step, _ in reached])) if reached else None,
        median_seconds_to_200=float(np.median(seconds)) if seconds else None,
        note=note,
    )


def _note(finished: int, evaluated: int, skipped: Counter) -> str:
    parts = []
    if finished == 0:
        parts.append("no finished runs")
    elif evaluated == 0:
        parts.append("no evaluations")
    elif evaluated < finished:
        parts.append(f"{finished - evaluated} of {finished} seeds without evaluations")
    if skipped:
        parts.append("skipped " + ", ".join(f"{count} {status}" for status, count in sorted(skipped.items())))
    return "; ".join(parts)


def verdict(rows: Sequence[GroupStats]) -> str:
    """One line: the best group, and whether its CI clears the runner-up's (best.ci_low > runner_up.ci_high)."""
    ranked = [row for row in rows if row.iqm is not None]
    if not ranked:
        return "No group has an evaluation to compare."
    best = ranked[0]
    if len(ranked) == 1:
        return f"Only one group with evaluations, {best.group}: {_describe(best)}; nothing to compare it with."
    second = ranked[1]
    if best.ci_low > second.ci_high:
        return (
            f"Best: {best.group}, {_describe(best)}; its CI is clear of the runner-up {second.group}, "
            f"{_describe(second)}: separated."
        )
    return (
        f"Best: {best.group}, {_describe(best)}; its CI overlaps the runner-up {second.group}, "
        f"{_describe(second)}: not separated, more seeds are needed to tell them apart."
    )


def _describe(row: GroupStats) -> str:
    return f"IQM {row.iqm:.1f} (95% CI {row.ci_low:.1f} to {row.ci_high:.1f}, {row.n_seeds} seeds)"


def iqm_curves(runs: Iterable[SeedRun]) -> dict[str, Curve]:
    """Per group, the IQM learning curve over its finished seeds; groups with no shared evaluation step are left out."""
    by_group: dict[str, list[dict[int, float]]] = defaultdict(list)
    for run in runs:
        if run.status == "FINISHED" and run.evals:
            by_group[run.group].append({step: value for step, value, _ in run.evals})
    curves = {}
    for group, histories in by_group.items():
        steps = sorted(set.intersection(*(set(history) for history in histories)))
        if steps:
            values = np.array([[history[step] for step in steps] for history in histories])
            low, high = bootstrap_ci(values)
            curves[group] = Curve(np.array(steps), trim_mean(values, 0.25, axis=0), low, high)
    return curves
