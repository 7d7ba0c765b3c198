"""What each swept key does, tested the way the sweep was designed: seeds shuffled only within the other keys.

A grid over batch_size x lr asks two questions, one per key, and each key's levels share the seeds of
every value of the other keys (15 seeds per lr in a 3 x 3 x 5 grid, not 5). For each key: a restricted
permutation test of its main effect (levels reshuffled within each combination of the other keys, so a
difference the other keys make cannot pass for this one's), Holm-adjusted over the keys; the best level's
lead over the worst with a stratified bootstrap CI; and, where nothing was detected, the smallest
difference the design would detect. For two keys, an approximate interaction test; for hovering, the same
test on the 0/1 outcome. Plain numpy/scipy, no MLflow.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import norm

from dqn.environment import SOLVED
from dqn.report.statistics import (
    ALPHA,
    HOVER,
    MIN_SEEDS_FOR_CI,
    PERMUTATIONS,
    POWER,
    RESAMPLES,
    RNG_SEED,
    Permuted,
    SeedRun,
    bootstrap_ci,
    holm,
    iqm,
    permutation_blocks,
)

OVERRIDE = re.compile(r",(?=[+~]?[\w.\-/]+=)")  # a comma that starts the next key=value, not one inside [256,256]


def key_values(group: str) -> dict[str, str]:
    """The swept keys of a group name as `dqn.sweep_protocol.group_name` writes it: `batch_size=64,lr=0.001`."""
    if "=" not in group:
        return {}
    pairs = (part.split("=", 1) for part in OVERRIDE.split(group))
    return {key.lstrip("+~"): value for key, value in pairs}


def level_order(values: Iterable[str]) -> list[str]:
    """Numbers in numeric order (1e-4 before 3e-4), anything else as text."""
    values = sorted(set(values))
    try:
        return sorted(values, key=float)
    except ValueError:
        return values


@dataclass(frozen=True)
class Design:
    """The scored seeds of a sweep, each with its value of every swept key."""

    keys: tuple[str, ...]
    levels: dict[str, list[str]]  # key -> its values, ordered
    cells: list[dict[str, str]]  # per seed: key -> value
    scores: np.ndarray
    hovered: np.ndarray  # per seed: 1.0 hovered, 0.0 not, nan unknown

    def varied(self) -> tuple[str, ...]:
        """The keys with two values or more: the ones with an effect to test."""
        return tuple(key for key in self.keys if len(self.levels[key]) > 1)


def design_of(runs: Iterable[SeedRun]) -> tuple[Design | None, str]:
    """The sweep's design from its group names, or None and why there is no per-key analysis."""
    scored = [run for run in runs if run.status == "FINISHED" and run.score is not None]
    cells = [key_values(run.group) for run in scored]
    keys = {tuple(sorted(cell)) for cell in cells}
    if not scored:
        return None, "no scored seeds"
    if len(keys) != 1 or not next(iter(keys)):
        return None, "the groups do not all set the same keys (e.g. a `defaults` group): no per-key analysis"
    (names,) = keys
    levels = {key: level_order(cell[key] for cell in cells) for key in names}
    hovered = np.array([np.nan if run.truncated is None else float(run.truncated > HOVER) for run in scored])
    design = Design(names, levels, cells, np.array([run.score for run in scored], dtype=float), hovered)
    if not design.varied():
        return None, "every key has a single value: there is no effect to test"
    return design, ""


# --- the restricted permutation test ---


def strata_blocks(
    design: Design, key: str, values: np.ndarray, keep: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[list[int]], list[tuple[str, ...]]]:
    """Per combination of the other keys that holds two or more values of `key`: its seeds' values block by
    block (one block per value of `key`), the block sizes, and which values the blocks are."""
    others = [other for other in design.keys if other != key]
    by_stratum: dict[tuple[str, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, cell in enumerate(design.cells):
        if keep is None or keep[i]:
            by_stratum[tuple(cell[other] for other in others)][cell[key]].append(values[i])
    strata, sizes, names = [], [], []
    for stratum in sorted(by_stratum):
        blocks = [(level, by_stratum[stratum][level]) for level in design.levels[key] if level in by_stratum[stratum]]
        if len(blocks) > 1:
            strata.append(np.concatenate([np.asarray(block, dtype=float) for _, block in blocks]))
            sizes.append([len(block) for _, block in blocks])
            names.append(tuple(level for level, _ in blocks))
    return strata, sizes, names


def between_ss(values: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Sum over blocks of n_block (block mean - stratum mean)^2: the key's sum of squares within a stratum.

    Shuffling within a stratum keeps its total sum of squares fixed, so the F ratio (between over within)
    grows with this alone and gives the same p-value; this one needs no degrees of freedom, which a stratum
    with an empty cell would change."""
    bounds = np.cumsum([0, *sizes])
    grand = values.mean(axis=1)
    return sum(
        (b - a) * (values[:, a:b].mean(axis=1) - grand) ** 2 for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    )


def stratified_p(
    design: Design, key: str, values: np.ndarray, keep: np.ndarray | None = None, permutations: int = PERMUTATIONS
) -> Permuted | None:
    """Restricted permutation test of `key` on `values`; None when no stratum holds two of its values."""
    strata, sizes, _ = strata_blocks(design, key, values, keep)
    if not strata:
        return None
    return permutation_blocks(strata, sizes, between_ss, permutations, RNG_SEED)


# --- main effects ---


@dataclass(frozen=True)
class MainEffect:
    """One swept key: its levels' means (averaged over the other keys' combinations), the test and the effect.

    `p` is the restricted permutation p, `p_adjusted` Holm over the keys tested; `difference` is the best
    level's mean minus the worst's, compared within the combinations of other keys that hold both, with its
    95% stratified bootstrap CI; `detectable` the difference a two-level comparison of these seed counts
    would detect with POWER (normal approximation from the pooled within-cell sd). `note` says why a field
    is None.
    """

    key: str
    levels: tuple[str, ...]
    means: tuple[float, ...]
    seeds: tuple[int, ...]
    p: float | None = None
    p_adjusted: float | None = None
    exact: bool = False
    floor: float | None = None
    best: str | None = None
    worst: str | None = None
    difference: float | None = None
    ci: tuple[float, float] | None = None
    detectable: float | None = None
    strata_used: int = 0
    strata: int = 0
    note: str = ""

    @property
    def matters(self) -> bool:
        return self.p_adjusted is not None and self.p_adjusted < ALPHA


def main_effects(design: Design, permutations: int = PERMUTATIONS) -> list[MainEffect]:
    """Every key with two values or more, Holm-adjusted over those that could be tested."""
    effects = [main_effect(design, key, permutations) for key in design.varied()]
    tested = [i for i, effect in enumerate(effects) if effect.p is not None]
    adjusted = holm([effects[i].p for i in tested])
    for i, p in zip(tested, adjusted, strict=True):
        effects[i] = replace(effects[i], p_adjusted=p)
    return effects


def main_effect(design: Design, key: str, permutations: int = PERMUTATIONS) -> MainEffect:
    strata, sizes, names = strata_blocks(design, key, design.scores)
    means = level_means(strata, sizes, names, design.levels[key])
    seeds = tuple(sum(cell[key] == level for cell in design.cells) for level in design.levels[key])
    total = len({tuple(cell[o] for o in design.keys if o != key) for cell in design.cells})
    effect = MainEffect(key, tuple(design.levels[key]), means, seeds, strata=total, strata_used=len(strata))
    if not strata:
        return replace(effect, note="no combination of the other keys holds two of its values")
    test = permutation_blocks(strata, sizes, between_ss, permutations, RNG_SEED)
    floor = permutation_blocks(separated(sizes), sizes, between_ss, permutations, RNG_SEED).p
    present = [(mean, level) for mean, level in zip(means, design.levels[key], strict=True) if not math.isnan(mean)]
    best, worst = max(present)[1], min(present)[1]
    difference, ci = level_difference(strata, sizes, names, best, worst)
    return replace(
        effect,
        p=test.p,
        exact=test.exact,
        floor=floor,
        best=best,
        worst=worst,
        difference=difference,
        ci=ci,
        detectable=detectable_difference(strata, sizes, min(s for s in seeds if s)),
    )


def separated(sizes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Values as far apart as a design's blocks can be: each block its own value, the largest key effect."""
    return [np.repeat(1000.0 * np.arange(len(block)), block) for block in sizes]


Strata = list[np.ndarray]  # per combination of the other keys: its seeds' values, block after block
Blocks = list[list[int]]  # per stratum: seeds per block
Names = list[tuple[str, ...]]  # per stratum: the key's value of each block


def level_means(strata: Strata, sizes: Blocks, names: Names, levels: Sequence[str]) -> tuple[float, ...]:
    """Per level, the mean over strata of its cell mean (nan where no tested stratum holds it): every
    combination of the other keys weighs the same, whatever its seeds."""
    cell_means: dict[str, list[float]] = defaultdict(list)
    for values, block, stratum in zip(strata, sizes, names, strict=True):
        bounds = np.cumsum([0, *block])
        for level, a, b in zip(stratum, bounds[:-1], bounds[1:], strict=True):
            cell_means[level].append(float(values[a:b].mean()))
    return tuple(float(np.mean(cell_means[level])) if cell_means[level] else math.nan for level in levels)


def level_difference(
    strata: Strata, sizes: Blocks, names: Names, best: str, worst: str
) -> tuple[float | None, tuple[float, float] | None]:
    """Mean over the strata holding both levels of (best cell mean - worst cell mean), with a 95% bootstrap
    CI that resamples seeds within each cell (a stratified bootstrap, rng seed fixed)."""
    pairs = []
    for values, block, stratum in zip(strata, sizes, names, strict=True):
        if best in stratum and worst in stratum:
            bounds = np.cumsum([0, *block])
            cell = {level: values[a:b] for level, a, b in zip(stratum, bounds[:-1], bounds[1:], strict=True)}
            pairs.append((cell[best], cell[worst]))
    if not pairs:
        return None, None
    rng = np.random.default_rng(RNG_SEED)
    point, boot = 0.0, np.zeros(RESAMPLES)
    for high, low in pairs:
        point += (high.mean() - low.mean()) / len(pairs)
        for sign, cell in ((1, high), (-1, low)):
            boot += sign * cell[rng.integers(0, cell.size, (RESAMPLES, cell.size))].mean(axis=1) / len(pairs)
    low_ci, high_ci = np.percentile(boot, [2.5, 97.5])
    return float(point), (float(low_ci), float(high_ci))


def detectable_difference(strata: Strata, sizes: Blocks, seeds_per_level: int) -> float | None:
    """(z_{1-alpha/2} + z_power) sd sqrt(2 / n): the difference between two levels of n seeds each that a
    two-sided test of means finds with POWER; sd pooled within cells. A normal approximation: it ignores
    the other levels and the permutation test's own distribution."""
    squares, dof = 0.0, 0
    for values, block in zip(strata, sizes, strict=True):
        bounds = np.cumsum([0, *block])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            squares += float(np.sum((values[a:b] - values[a:b].mean()) ** 2))
            dof += b - a - 1
    if dof < 1:
        return None
    z = norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)
    return float(z * math.sqrt(squares / dof) * math.sqrt(2 / seeds_per_level))


# --- the interaction of two keys ---


@dataclass(frozen=True)
class Interaction:
    """Whether the effect of one key depends on the other's value; p None (and why in `note`) when untested."""

    keys: tuple[str, str]
    p: float | None
    note: str = ""


def interaction(design: Design, permutations: int = PERMUTATIONS) -> Interaction | None:
    """Whether one key's effect depends on the other's value: the interaction sum of squares of the cell
    means, its null from shuffling the additive model's residuals across all seeds (ter Braak 1992).

    Approximate: residuals are only nearly exchangeable, and the additive fit from cell means is the least
    squares one only when every cell has the same seeds. Needs exactly two varied keys and every cell.
    """
    keys = design.varied()
    if len(keys) != 2:
        return None
    a, b = keys
    cells = [(x, y) for x in design.levels[a] for y in design.levels[b]]
    index = {cell: i for i, cell in enumerate(cells)}
    of = np.array([index[cell[a], cell[b]] for cell in design.cells])
    if len(set(of)) < len(cells):
        return Interaction((a, b), None, "not every combination of the two keys has seeds")
    shape = (len(design.levels[a]), len(design.levels[b]))
    residuals = design.scores - additive_fit(design.scores, of, shape)[of]
    order = np.argsort(of, kind="stable")
    sizes = np.bincount(of, minlength=len(cells)).tolist()

    def statistic(values: np.ndarray, _: Sequence[int]) -> np.ndarray:
        return interaction_ss(values, sizes, shape)

    return Interaction((a, b), permutation_blocks([residuals[order]], [sizes], statistic, permutations, RNG_SEED).p)


def additive_fit(values: np.ndarray, of: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per cell: row mean + column mean - grand mean, all of cell means."""
    means = (np.bincount(of, values, shape[0] * shape[1]) / np.bincount(of, minlength=shape[0] * shape[1])).reshape(
        shape
    )
    return (means.mean(axis=1, keepdims=True) + means.mean(axis=0, keepdims=True) - means.mean()).ravel()


def interaction_ss(values: np.ndarray, sizes: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """(arrangements,): sum over cells of n (cell mean - its additive fit)^2, values listed cell by cell."""
    bounds = np.cumsum([0, *sizes])
    means = np.stack([values[:, x:y].mean(axis=1) for x, y in zip(bounds[:-1], bounds[1:], strict=True)], axis=1)
    grid = means.reshape(-1, *shape)
    fit = grid.mean(axis=2, keepdims=True) + grid.mean(axis=1, keepdims=True) - grid.mean(axis=(1, 2), keepdims=True)
    return np.sum(np.asarray(sizes) * (grid - fit).reshape(len(values), -1) ** 2, axis=1)


# --- hovering: a yes/no outcome per seed ---


@dataclass(frozen=True)
class HoverTest:
    """Hover counts across the values of `key` (None: across every config), the same restricted test on 0/1."""

    key: str | None
    counts: tuple[tuple[str, int, int], ...]  # (level, seeds hovered, seeds)
    p: float | None
    note: str = ""


def hover_tests(design: Design, permutations: int = PERMUTATIONS) -> list[HoverTest]:
    """Per varied key, and across configs: whether hovering depends on it. On 0/1 outcomes the between
    sum of squares is the (stratified) chi-square's numerator, so this is a permutation chi-square test."""
    known = ~np.isnan(design.hovered)
    hovered = np.nan_to_num(design.hovered)
    tests = [hover_test(design, key, hovered, known, permutations) for key in design.varied()]
    if len(design.varied()) > 1:  # and across configs, one stratum: is hovering a property of some configs?
        names = [",".join(f"{key}={cell[key]}" for key in design.keys) for cell in design.cells]
        configs = Design(
            ("config",), {"config": sorted(set(names))}, [{"config": n} for n in names], design.scores, hovered
        )
        tests.append(hover_test(configs, "config", hovered, known, permutations))
    return tests


def hover_test(design: Design, key: str, hovered: np.ndarray, known: np.ndarray, permutations: int) -> HoverTest:
    level_of = np.array([cell[key] for cell in design.cells])
    counts = tuple(
        (level, int(hovered[known & (level_of == level)].sum()), int(np.sum(known & (level_of == level))))
        for level in design.levels[key]
    )
    total, seeds = int(hovered[known].sum()), int(known.sum())
    if seeds == 0:
        return HoverTest(key, counts, None, "no seed says whether it hovered")
    if total in (0, seeds):
        return HoverTest(key, counts, None, f"{'no' if total == 0 else 'every'} seed hovered: nothing to compare")
    result = stratified_p(design, key, hovered, known, permutations)
    if result is None:
        return HoverTest(key, counts, None, "no combination of the other keys holds two of its values")
    return HoverTest(key, counts, result.p)


# --- what the figures show ---


def band(scores: np.ndarray) -> tuple[float, float, float]:
    """IQM and its band: the 95% bootstrap CI from MIN_SEEDS_FOR_CI seeds on, the seeds' min to max below."""
    if scores.size >= MIN_SEEDS_FOR_CI:
        low, high = bootstrap_ci(scores[:, None])
        return iqm(scores), float(low[0]), float(high[0])
    return iqm(scores), float(scores.min()), float(scores.max())


def select(design: Design, **values: str) -> np.ndarray:
    """The scores of the seeds with these key values."""
    mask = [all(cell[key] == value for key, value in values.items()) for cell in design.cells]
    return design.scores[np.array(mask, dtype=bool)]


def heatmap_grid(design: Design) -> tuple[tuple[str, list[str]], tuple[str, list[str]], np.ndarray, list[list[str]]]:
    """For two varied keys: (row key, values), (column key, values), the IQM per cell, "k/n" seeds solved."""
    rows, columns = design.varied()
    iqms = np.full((len(design.levels[rows]), len(design.levels[columns])), np.nan)
    solved = [["" for _ in design.levels[columns]] for _ in design.levels[rows]]
    for i, row in enumerate(design.levels[rows]):
        for j, column in enumerate(design.levels[columns]):
            scores = select(design, **{rows: row, columns: column})
            if scores.size:
                iqms[i, j] = iqm(scores)
                solved[i][j] = f"{int(np.sum(scores >= SOLVED))}/{scores.size}"
    return (rows, design.levels[rows]), (columns, design.levels[columns]), iqms, solved


def sensitivity(design: Design) -> dict[str, tuple[list[str], dict[str, tuple[np.ndarray, ...]]]]:
    """Per varied key: its values and the lines to draw, all seeds pooled and (with two keys) one per value
    of the other key; a value without seeds is nan."""
    keys = design.varied()
    panels = {}
    for key in keys:
        others = [other for other in keys if other != key]
        lines = {f"all seeds (pooled over {', '.join(others)})" if others else "all seeds": curve(design, key)}
        if len(others) == 1:
            (other,) = others
            for value in design.levels[other]:
                lines[f"{other}={value}"] = curve(design, key, **{other: value})
        panels[key] = (design.levels[key], lines)
    return panels


def curve(design: Design, key: str, **fixed: str) -> tuple[np.ndarray, ...]:
    points = [select(design, **fixed, **{key: level}) for level in design.levels[key]]
    return tuple(
        np.array(column) for column in zip(*(band(p) if p.size else (np.nan,) * 3 for p in points), strict=True)
    )


# --- the lines at the top of the report ---


@dataclass(frozen=True)
class Analysis:
    """Everything the report says per key; `note` says why there is no design when `design` is None."""

    design: Design | None
    effects: tuple[MainEffect, ...] = ()
    interaction: Interaction | None = None
    hover: tuple[HoverTest, ...] = ()
    note: str = ""

    def lines(self) -> list[str]:
        """One plain line per key, then the interaction and hovering: the answer before the details."""
        if self.design is None:
            return [f"Per-key analysis: {self.note}."]
        strongest = sorted(self.effects, key=lambda e: (e.p_adjusted is None, e.p_adjusted or 0.0, e.key))
        lines = [effect_line(effect, len(self.effects)) for effect in strongest]
        if self.interaction is not None:
            lines.append(interaction_line(self.interaction))
        lines += [hover_line(test) for test in self.hover]
        return lines


def analyse(runs: Iterable[SeedRun], permutations: int = PERMUTATIONS) -> Analysis:
    design, note = design_of(runs)
    if design is None:
        return Analysis(None, note=note)
    return Analysis(
        design,
        tuple(main_effects(design, permutations)),
        interaction(design, permutations),
        tuple(hover_tests(design, permutations)),
    )


def effect_line(effect: MainEffect, keys: int) -> str:
    if effect.p is None:
        return f"{effect.key}: the stratified test is not possible ({effect.note})."
    family = f", Holm over {keys} keys" if keys > 1 else ""
    p = f"p = {fmt_p(effect.p_adjusted)}{family}"
    missing = f"; {effect.strata_used} of {effect.strata} combinations of the other keys tested" * (
        effect.strata_used < effect.strata
    )
    if effect.matters:
        ci = f" [95% CI {effect.ci[0]:+.0f}, {effect.ci[1]:+.0f}]" if effect.ci else ""
        return (
            f"{effect.key}: matters, {p}; {effect.best} best, {effect.difference:+.0f} over {effect.worst}{ci} "
            f"(mean score, seeds pooled over the other keys){missing}."
        )
    if effect.floor is not None and effect.floor >= ALPHA:
        return (
            f"{effect.key}: cannot be shown to matter at this design, {p}: the smallest p it can reach is "
            f"{effect.floor:.3f}{missing}."
        )
    detectable = f"; smallest detectable difference ~{effect.detectable:.0f}" if effect.detectable else ""
    observed = f" (observed: {effect.best} {effect.difference:+.0f} over {effect.worst})" if effect.best else ""
    return f"{effect.key}: no effect detected at this design, {p}{detectable}{observed}{missing}."


def interaction_line(result: Interaction) -> str:
    a, b = result.keys
    if result.p is None:
        return f"{a} x {b} interaction: not tested ({result.note})."
    verdict = "the effect of one depends on the other" if result.p < ALPHA else "none detected"
    return (
        f"{a} x {b} interaction: {verdict}, p = {fmt_p(result.p)} (approximate: residuals of the additive model "
        "permuted; not in the Holm family)."
    )


def hover_line(test: HoverTest) -> str:
    counts = ", ".join(f"{level} {k}/{n}" for level, k, n in test.counts)
    if test.p is None:
        return f"hovering by {test.key}: {counts}; {test.note}."
    outcome = "depends on it" if test.p < ALPHA else "no difference detected"
    test_name = "stratified permutation test on counts"
    return f"hovering by {test.key}: {counts} seeds hovered; {outcome}, p = {fmt_p(test.p)} ({test_name})."


def fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
