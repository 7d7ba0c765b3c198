"""Per-group statistics of a sweep's seeds: which configuration is best, and whether that can be defended.

Each seed is scored by the fresh final evaluation of the weights its run delivered. Groups are ranked by
the interquartile mean (IQM) of their seeds' scores, with a percentile bootstrap CI over seeds from 5 seeds
on (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"). Whether the best group is
better than each other one is a step-down permutation test of the best against the rest (the best re-chosen
in every permutation), with the probability of improvement as the effect size. The permutation engine
(`permutation_blocks`) also serves the per-key analysis of `dqn.report.design`. Plain numpy/scipy, no MLflow.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
from scipy.stats import norm, permutation_test, trim_mean

from dqn.environment import SOLVED

HOVER = 0.5  # a seed hovers when more than this share of its scoring evaluation hit the time limit
STALL = 0.0  # a seed stalls when no in-training evaluation reached this return: it never took off
RESAMPLES = 2000
RNG_SEED = 0  # the same sweep gives the same CI and p-values every time the report is made
ALPHA = 0.05
POWER = 0.8
MIN_SEEDS_TO_TEST = 4  # the fewest seeds a power estimate asks for: 4 v 4 with the IQM floors at 4/70
MIN_SEEDS_FOR_CI = 5  # at 4 or fewer the 95% bootstrap CI is the seeds' min to max, covering the IQM 51-88%
PERMUTATIONS = 9999  # exact test up to this many ways to split two groups' seeds, Monte Carlo beyond

FINAL_SCORE = "final_eval_return_mean"  # fresh episodes of the delivered weights (dqn.learn)
LAST_SCORE = "eval_return_mean"  # older runs: their last in-training evaluation, of the last weights


@dataclass(frozen=True)
class SeedRun:
    """One job of a sweep. Only FINISHED runs count as seeds; `score` is None when the run never evaluated.

    `scored_by` names the metric behind `score` (FINAL_SCORE, or LAST_SCORE for runs from before the final
    evaluation existed); `truncated` is the share of that evaluation's episodes cut by the time limit.
    """

    group: str
    seed: int | None
    score: float | None
    truncated: float | None = None
    evals: Sequence[tuple[int, float, float | None]] = ()  # (env step, eval_return_mean, train_seconds)
    status: str = "FINISHED"
    scored_by: str = FINAL_SCORE


@dataclass(frozen=True)
class GroupStats:
    """One report row, over the seeds that have a score; None where there is nothing to compute.

    `ci_low`/`ci_high` bound the IQM from MIN_SEEDS_FOR_CI seeds on; below, `seeds` (every score, sorted)
    is what there is to read. `std` is the sample std (ddof=1). `seeds_solved` is "k/n", the seeds whose
    score is >= 200; `hover_rate` the share of seeds whose scoring evaluation was mostly truncated, and
    `stall_rate` the share that never took off (no in-training evaluation reached STALL).
    `n_reached_200` seeds had an evaluation >= 200 during training: from that step on, the weights that
    keep_best delivers had scored >= 200 when they were chosen; the medians are over those seeds.
    """

    group: str
    n_seeds: int
    iqm: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    seeds: tuple[float, ...] = ()
    mean: float | None = None
    std: float | None = None
    seeds_solved: str | None = None
    hover_rate: float | None = None
    stall_rate: float | None = None
    n_reached_200: int | None = None
    median_steps_to_200: float | None = None
    median_seconds_to_200: float | None = None
    note: str = ""


COLUMNS = tuple(field.name for field in fields(GroupStats))


class Curve(NamedTuple):
    """IQM of eval_return_mean over a group's seeds at the evaluation steps they all share, with a band:
    the 95% bootstrap CI of the IQM from MIN_SEEDS_FOR_CI seeds on, the seeds' min to max below."""

    steps: np.ndarray
    iqm: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_seeds: int


def iqm(values: Iterable[float]) -> float:
    """Mean of the middle half (25% trimmed from each end), rliable's definition."""
    return float(trim_mean(np.asarray(list(values), dtype=float), 0.25))


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the IQM of each column of (seeds, k) `values`, resampling seeds with replacement.

    With one task, rliable's stratified bootstrap is exactly this; whole rows are resampled so a
    curve's points keep each seed's history together.
    """
    values = values[np.lexsort(values.T[::-1])]  # canonical row order: the CI ignores the order runs are listed in
    n = values.shape[0]
    picks = np.random.default_rng(RNG_SEED).integers(0, n, size=(RESAMPLES, n))
    estimates = trim_mean(values[picks], 0.25, axis=1)
    tail = 50 * (1 - confidence)
    low, high = np.percentile(estimates, [tail, 100 - tail], axis=0)
    return low, high


def first_reach(evals: Sequence[tuple[int, float, float | None]]) -> tuple[int, float | None] | None:
    """(env step, train seconds) of the first evaluation at or above 200, None if none was.

    It is also where the best evaluation so far (best_eval_return_mean) first reaches 200.
    """
    for step, value, seconds in sorted(evals, key=lambda row: row[0]):
        if value >= SOLVED:
            return step, seconds
    return None


def stats_by_group(runs: Iterable[SeedRun]) -> list[GroupStats]:
    """One row per group (the seed is not part of it), best IQM first, groups without scores last."""
    by_group: dict[str, list[SeedRun]] = defaultdict(list)
    for run in runs:
        by_group[run.group].append(run)
    rows = [group_stats(group, members) for group, members in by_group.items()]
    return sorted(rows, key=lambda row: (row.iqm is None, -(row.iqm or 0.0), row.group))


def group_stats(group: str, runs: Sequence[SeedRun]) -> GroupStats:
    finished = [run for run in runs if run.status == "FINISHED"]
    scored = [run for run in finished if run.score is not None]
    skipped = Counter(run.status for run in runs if run.status != "FINISHED")
    fallback = sum(run.scored_by != FINAL_SCORE for run in scored)
    note = _note(len(finished), len(scored), fallback, skipped)
    if not scored:
        return GroupStats(group, 0, note=note)
    scores = np.array(sorted(run.score for run in scored), dtype=float)
    truncated = np.array([run.truncated for run in scored if run.truncated is not None])
    reached = [hit for hit in map(first_reach, (run.evals for run in scored)) if hit is not None]
    seconds = [s for _, s in reached if s is not None]
    low, high = bootstrap_ci(scores[:, None]) if scores.size >= MIN_SEEDS_FOR_CI else ([None], [None])
    return GroupStats(
        group=group,
        n_seeds=scores.size,
        iqm=iqm(scores),
        ci_low=_float(low[0]),
        ci_high=_float(high[0]),
        seeds=tuple(float(score) for score in scores),
        mean=float(scores.mean()),
        std=float(scores.std(ddof=1)) if scores.size > 1 else None,
        seeds_solved=f"{int(np.sum(scores >= SOLVED))}/{scores.size}",
        hover_rate=float(np.mean(truncated > HOVER)) if truncated.size else None,
        stall_rate=float(np.mean([stalls(run) for run in scored])),
        n_reached_200=len(reached),
        median_steps_to_200=float(np.median([step for step, _ in reached])) if reached else None,
        median_seconds_to_200=float(np.median(seconds)) if seconds else None,
        note=note,
    )


def stalls(run: SeedRun) -> bool:
    """The run that never takes off: none of its in-training evaluations reached STALL (or it had none)."""
    return not run.evals or max(value for _, value, _ in run.evals) < STALL


def _float(value) -> float | None:
    return None if value is None else float(value)


def _note(finished: int, scored: int, fallback: int, skipped: Counter) -> str:
    parts = []
    if finished == 0:
        parts.append("no finished runs")
    elif scored == 0:
        parts.append("no evaluations")
    elif scored < finished:
        parts.append(f"{finished - scored} of {finished} finished seeds without evaluations, not counted")
    if fallback:
        parts.append(f"{fallback} scored by their last {LAST_SCORE} (no {FINAL_SCORE})")
    if skipped:
        parts.append("skipped " + ", ".join(f"{count} {status}" for status, count in sorted(skipped.items())))
    return "; ".join(parts)


# --- is the best group better than each other one? ---


def permutation_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided permutation p-value of iqm(x) - iqm(y): exact up to PERMUTATIONS splits, else Monte Carlo.

    Two-sided, although the question is whether the best is *greater*: the best is picked after seeing
    the data, so its one-sided p must be doubled; with two groups drawn alike, a one-sided test of the
    one that came out ahead says "better" in 10% of sweeps instead of 5%.
    """

    def difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return trim_mean(a, 0.25, axis=axis) - trim_mean(b, 0.25, axis=axis)

    result = permutation_test(
        (np.asarray(x, dtype=float), np.asarray(y, dtype=float)),
        difference,
        permutation_type="independent",
        alternative="two-sided",
        vectorized=True,
        n_resamples=PERMUTATIONS,
        random_state=RNG_SEED,
    )
    return float(result.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: a claim from any test of the family is false at most ALPHA of the time."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p_values) - rank) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) for a random seed of each group, ties counting half: Mann-Whitney's U / (n m), rliable's
    effect size. 0.5 is no difference; unlike the IQM difference it does not care how far apart they are."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.mean((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])))


def improvement_ci(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Percentile CI of P(X > Y), resampling each group's seeds on their own (a stratified bootstrap)."""
    x, y = np.sort(np.asarray(x, dtype=float)), np.sort(np.asarray(y, dtype=float))
    rng = np.random.default_rng(RNG_SEED)
    xs = x[rng.integers(0, x.size, size=(RESAMPLES, x.size))][:, :, None]
    ys = y[rng.integers(0, y.size, size=(RESAMPLES, y.size))][:, None, :]
    estimates = np.mean((xs > ys) + 0.5 * (xs == ys), axis=(1, 2))
    tail = 50 * (1 - confidence)
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def seeds_for_power(x: Sequence[float], y: Sequence[float]) -> int | None:
    """Seeds per group that would detect a difference of the observed IQM difference with POWER at ALPHA.

    A rough normal approximation for a two-sided two-sample test of means with the pooled sample std:
    n = 2 (z_{1-alpha/2} + z_power)^2 sd^2 / difference^2; never below MIN_SEEDS_TO_TEST. None when no
    difference was seen or a group has a single seed.
    """
    n, m = len(x), len(y)
    difference = iqm(x) - iqm(y)
    if n < 2 or m < 2 or difference <= 0:
        return None
    pooled = ((n - 1) * np.var(x, ddof=1) + (m - 1) * np.var(y, ddof=1)) / (n + m - 2)
    z = norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)
    return max(MIN_SEEDS_TO_TEST, math.ceil(2 * z**2 * pooled / difference**2))


# --- a permutation test over blocks of seeds: the engine of the verdict and of dqn.report.design ---


class Permuted(NamedTuple):
    """A permutation p-value and how it was found: every arrangement (exact) or `arrangements` random ones."""

    p: float
    exact: bool
    arrangements: int


Statistic = Callable[[np.ndarray, Sequence[int]], np.ndarray]  # (arrangements, seeds) -> (arrangements,)


def permutation_blocks(
    strata: Sequence[np.ndarray],
    sizes: Sequence[Sequence[int]],
    statistic: Statistic,
    permutations: int = PERMUTATIONS,
    seed: int = RNG_SEED,
) -> Permuted:
    """P(statistic >= observed) when seeds are reshuffled across the blocks of their own stratum only.

    Each stratum's seeds are listed block after block (`sizes`: seeds per block); the statistic of an
    arrangement is the sum of `statistic` over the strata. Every arrangement is enumerated while there are
    at most PERMUTATIONS of them (p = share at least as large, the observed one included); beyond, a Monte
    Carlo sample of `permutations` with a fixed RNG seed, p = (1 + count) / (1 + permutations), which
    never falls below the exact p's floor by chance.
    """
    observed = sum(float(statistic(values[None, :], block)[0]) for values, block in zip(strata, sizes, strict=True))
    total = math.prod(multinomial(block) for block in sizes)
    if total <= PERMUTATIONS:
        per_stratum = [statistic(values[orderings(block)], block) for values, block in zip(strata, sizes, strict=True)]
        null = functools.reduce(lambda a, b: np.add.outer(a, b).ravel(), per_stratum)
        return Permuted(float(np.mean(null >= observed - TOLERANCE * max(1.0, abs(observed)))), True, total)
    rng = np.random.default_rng(seed)
    null = np.zeros(permutations)
    for values, block in zip(strata, sizes, strict=True):
        shuffled = rng.permuted(np.tile(np.arange(values.size), (permutations, 1)), axis=1)
        null += statistic(values[shuffled], block)
    count = int(np.sum(null >= observed - TOLERANCE * max(1.0, abs(observed))))
    return Permuted((1 + count) / (1 + permutations), False, permutations)


TOLERANCE = 1e-9  # relative: sums of the same numbers in another order differ in the last bits


def multinomial(sizes: Sequence[int]) -> int:
    """Ways to deal sum(sizes) seeds into blocks of these sizes."""
    return math.factorial(sum(sizes)) // math.prod(math.factorial(size) for size in sizes)


def orderings(sizes: Sequence[int]) -> np.ndarray:
    """Every way to deal seeds 0..n-1 into blocks of `sizes`, one row each: the first sizes[0] columns are
    block 0's seeds, and so on (within a block in increasing order, since order within a block is no arrangement)."""
    rows = [()]
    left = [tuple(range(sum(sizes)))]
    for size in sizes:
        rows_next, left_next = [], []
        for row, rest in zip(rows, left, strict=True):
            for chosen in itertools.combinations(rest, size):
                rows_next.append(row + chosen)
                left_next.append(tuple(i for i in rest if i not in chosen))
        rows, left = rows_next, left_next
    return np.array(rows, dtype=int).reshape(len(rows), sum(sizes))


def block_iqms(values: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """(arrangements, blocks): the IQM of each block's seeds, trimmed as scipy's trim_mean does (int(n / 4) from
    each end) without its per-call overhead, which dominated the audit's time."""
    bounds = np.cumsum([0, *sizes])
    blocks = []
    for a, b in itertools.pairwise(bounds):
        cut = int(0.25 * (b - a))
        blocks.append(np.sort(values[:, a:b], axis=1)[:, cut : b - a - cut].mean(axis=1))
    return np.stack(blocks, axis=1)


def iqm_range(values: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Top block IQM minus bottom block IQM: the best's lead over the worst, the best re-chosen in every arrangement."""
    iqms = block_iqms(values, sizes)
    return iqms.max(axis=1) - iqms.min(axis=1)


def range_p(groups: Sequence[Sequence[float]], permutations: int = PERMUTATIONS, seed: int = RNG_SEED) -> Permuted:
    """Permutation test that these groups are alike, by the range of their IQMs (two groups: |IQM difference|)."""
    values = np.concatenate([np.asarray(group, dtype=float) for group in groups])
    return permutation_blocks([values], [[len(group) for group in groups]], iqm_range, permutations, seed)


@dataclass(frozen=True)
class Comparison:
    """The best group against one other. `p_value` is the step-down adjusted p of "the best is better than
    this one" (None when the group was not tested); the effect size compares the two groups alone."""

    group: str
    n_seeds: int
    iqm: float
    difference: float  # IQM of the best minus this group's
    p_value: float | None = None
    improvement: float | None = None  # P(a seed of the best > a seed of this group)
    improvement_low: float | None = None
    improvement_high: float | None = None
    seeds_needed: int | None = None

    @property
    def separated(self) -> bool:
        """The best group is better than this one: adjusted p < ALPHA."""
        return self.p_value is not None and self.p_value < ALPHA


@dataclass(frozen=True)
class Verdict:
    """The best group, how it compares with every other one, and the lines that say so.

    `floor` is the smallest p the procedure can return at this design (every group far apart from every
    other): above ALPHA, no data could make the best group "better than every other one".
    """

    best: GroupStats | None
    comparisons: tuple[Comparison, ...]
    headline: str
    details: tuple[str, ...] = ()
    floor: float | None = None

    @property
    def separated(self) -> bool:
        """The best group is better than every other one, each at adjusted p < ALPHA."""
        return bool(self.comparisons) and all(c.separated for c in self.comparisons)

    @property
    def supported(self) -> bool:
        """Whether this design could show a best group at all."""
        return self.floor is not None and self.floor < ALPHA


def verdict(rows: Sequence[GroupStats], permutations: int = PERMUTATIONS) -> Verdict:
    """Compare the best group (top IQM) with every other group that has a score: a step-down over the
    k - 1 comparisons with the best, each step a permutation test that accounts for the best being chosen.

    Step i tests "the best and the groups not yet separated from it are alike" by the range of their IQMs
    (max minus min, so the best is re-chosen in every arrangement, as it was chosen after seeing the data);
    rejected, the worst of them is separated and leaves the set. Adjusted p-values are the running maximum,
    so "better than every other one" is claimed at most ALPHA of the time when all groups are alike, whatever
    the number of groups. Holm over all pairs (before 2026-12-06) could not: 9 groups of 5 seeds floored at 0.571.
    """
    ranked = [row for row in rows if row.iqm is not None]
    if not ranked:
        return Verdict(None, (), "No group has an evaluation to compare.")
    best, others = ranked[0], ranked[1:]
    warning = _few_seeds_warning(ranked)
    if not others:
        headline = f"Only one group with scores, {best.group}: {_describe(best)}; nothing to compare it with."
        return Verdict(best, (), headline, warning)
    adjusted = step_down([row.seeds for row in ranked], permutations)
    floor = step_down_floor(tuple(row.n_seeds for row in ranked), permutations)
    comparisons = tuple(_compare(best, other, p) for other, p in zip(others, adjusted, strict=True))
    details = tuple(_comparison_line(best, c) for c in comparisons)
    details += warning + _power_line(best, comparisons[0])
    return Verdict(best, comparisons, _headline(best, comparisons, floor, len(ranked)), details, floor)


def step_down(groups: Sequence[Sequence[float]], permutations: int = PERMUTATIONS) -> list[float]:
    """Adjusted p of "group 0 (the best) is better than group j" for j = 1..k-1, groups ranked by IQM.

    The set starts as every group; each step tests it by `range_p`, then drops its worst group; a group's
    p is the largest step p up to its own step (closed testing's monotone shortcut).
    """
    order = sorted(range(1, len(groups)), key=lambda j: iqm(groups[j]))  # worst first
    adjusted, running, members = [1.0] * (len(groups) - 1), 0.0, [0, *order]
    for j in order:
        running = max(running, range_p([groups[i] for i in members], permutations).p)
        adjusted[j - 1] = running
        members.remove(j)
    return adjusted


@functools.cache
def step_down_floor(sizes: tuple[int, ...], permutations: int = PERMUTATIONS) -> float:
    """The smallest p `step_down` can give the runner-up at these group sizes: its p on groups far apart."""
    groups = [1000.0 * rank + np.arange(size, dtype=float) for rank, size in enumerate(sorted(sizes, reverse=True))]
    return max(step_down(groups[::-1], permutations)) if len(groups) > 1 else 1.0


def _compare(best: GroupStats, other: GroupStats, p_value: float | None) -> Comparison:
    low, high = improvement_ci(best.seeds, other.seeds)
    return Comparison(
        group=other.group,
        n_seeds=other.n_seeds,
        iqm=other.iqm,
        difference=best.iqm - other.iqm,
        p_value=p_value,
        improvement=probability_of_improvement(best.seeds, other.seeds),
        improvement_low=low,
        improvement_high=high,
        seeds_needed=seeds_for_power(best.seeds, other.seeds),
    )


def cannot_show_best(floor: float, groups: int, sizes: Sequence[int]) -> str:
    """The line that says a design cannot support a claim of a best config."""
    seeds = f"{min(sizes)} seeds" if min(sizes) == max(sizes) else f"{min(sizes)} to {max(sizes)} seeds"
    return (
        f"with {seeds} and {groups} groups no single config can be shown best at p < {ALPHA:g}: the smallest p "
        f"this comparison can reach is {floor:.3f}"
    )


def _headline(best: GroupStats, comparisons: Sequence[Comparison], floor: float, groups: int) -> str:
    lead = f"Best by IQM: {best.group}, {_describe(best)}"
    if floor >= ALPHA:
        sizes = [best.n_seeds, *(c.n_seeds for c in comparisons)]
        return f"{lead}; {cannot_show_best(floor, groups, sizes)}: it is not shown better than any group."
    behind = [c.group for c in comparisons if not c.separated]
    if not behind:
        return (
            f"{lead}; better than every other group (step-down permutation test of the best against the rest, "
            f"p < {ALPHA:g})."
        )
    return f"{lead}; not shown better than {', '.join(behind)}: more seeds are needed to tell them apart."


def _comparison_line(best: GroupStats, c: Comparison) -> str:
    lead = f"vs {c.group} (IQM {c.iqm:.1f}, {c.n_seeds} seeds; difference {c.difference:.1f})"
    outcome = "better" if c.separated else "not separated"
    return (
        f"{lead}: {outcome}, p = {c.p_value:.3f} (step-down permutation test against the best, adjusted); "
        f"P({best.group} > {c.group}) = {c.improvement:.2f} "
        f"(95% CI {c.improvement_low:.2f} to {c.improvement_high:.2f})."
    )


def _few_seeds_warning(rows: Sequence[GroupStats]) -> tuple[str, ...]:
    few = [f"{row.group} ({row.n_seeds})" for row in rows if row.n_seeds < MIN_SEEDS_FOR_CI]
    if not few:
        return ()
    return (
        f"Warning: fewer than {MIN_SEEDS_FOR_CI} seeds in {', '.join(few)}: no CI is given and the tests have "
        f"little power (4 v 4 seeds cannot reach p < {ALPHA:g}, 3 v 3 not below 0.1).",
    )


def _power_line(best: GroupStats, c: Comparison) -> tuple[str, ...]:
    """How many seeds the runner-up's comparison would need: the closest call is the one to plan for."""
    if c.seeds_needed is None:
        return ()
    return (
        f"Seeds needed: a difference the size of {best.group} over {c.group} ({c.difference:.1f}) needs "
        f"about {c.seeds_needed} seeds per group for {POWER:.0%} power at alpha {ALPHA:g} (normal approximation, "
        "two-sided, from the pooled sample std; comparing with several groups asks more).",
    )


def _describe(row: GroupStats) -> str:
    if row.ci_low is None:
        return f"IQM {row.iqm:.1f} ({row.n_seeds} seed{'s' * (row.n_seeds != 1)}: {_values(row.seeds)})"
    return f"IQM {row.iqm:.1f} (95% CI {row.ci_low:.1f} to {row.ci_high:.1f}, {row.n_seeds} seeds)"


def _values(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


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
            if len(histories) >= MIN_SEEDS_FOR_CI:
                low, high = bootstrap_ci(values)
            else:
                low, high = values.min(axis=0), values.max(axis=0)
            curves[group] = Curve(np.array(steps), trim_mean(values, 0.25, axis=0), low, high, len(histories))
    return curves
