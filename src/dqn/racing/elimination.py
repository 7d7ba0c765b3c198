"""The race itself, as pure functions on a table of scores: which configs a round drops, how many seeds
the survivors get next, and the whole race given a way to score (config, seed) jobs. No Hydra, no MLflow.

As in F-Race (Birattari et al. 2002) and irace (Lopez-Ibanez et al. 2016), seeds are blocks: seed i is
the same for every config, so each config is ranked against the others within each seed, and a seed that
is hard for everyone moves no config's rank. A config is dropped when its mean rank is so far below the
best's that shuffling the configs' labels within each seed rarely spreads the mean ranks that far: the
permutation distribution of the range of mean ranks (the largest gap to a best chosen after the fact)
gives each gap an adjusted p-value, and the test steps down (those dropped leave, the rest are ranked
and tested again) as in Westfall and Young's max-T procedure. A failed job ranks below every score of
its seed. Each round's test holds its level; repeated looks across rounds are not corrected (as in
F-Race and irace), which docs/racing.md measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import permutation_test, rankdata

RESAMPLES = 9999  # exact below this many relabellings, Monte Carlo above
RNG_SEED = 0  # the same scores give the same decisions: a race replayed from its results makes the same drops

SEPARATED = "separated"  # one config left: the best is separated from all others
BUDGET = "seed_budget"  # the next round would pass the seed budget
MAX_SEEDS = "max_seeds"  # the contenders have run max_seeds each
STOPPED = "stopped"  # the command was asked to stop


@dataclass(frozen=True)
class Rules:
    """How a race spends seeds; `dqn.config.RaceConfig` documents each."""

    first_seeds: int = 3
    seeds_per_round: int = 1
    max_seeds: int = 10
    seed_budget: int | None = None
    alpha: float = 0.05

    def budget(self, configs: int) -> int:
        return self.seed_budget if self.seed_budget is not None else configs * self.max_seeds


@dataclass(frozen=True)
class Drop:
    """A config a round dropped: its mean rank among that round's survivors, and the adjusted p of its gap
    to the best's."""

    config: int
    round: int
    seeds: int
    mean_rank: float
    best: int
    best_mean_rank: float
    p_value: float


@dataclass(frozen=True)
class Race:
    """What a race did: every (config, seed) score it ran (nan: the job failed), who is left, who was
    dropped when and why, and why it ended."""

    scores: dict[tuple[int, int], float]
    alive: tuple[int, ...]
    drops: tuple[Drop, ...]
    ended: str
    rounds: int
    tests: list[tuple[int, list[tuple[int, float, float]]]] = field(default_factory=list)
    """Per round: the seeds each config had, and (config, mean rank, p of its gap to the best) for each tested."""

    def seeds_of(self, config: int) -> int:
        return sum(c == config for c, _ in self.scores)


def within_seed_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks of the configs (columns) within each seed (rows), 1 the worst, ties sharing the mean rank; a
    failed job (nan) ranks below every score."""
    return rankdata(np.where(np.isnan(scores), -np.inf, scores), axis=1)


def _range_of_mean_ranks(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
    means = np.stack([column.mean(axis=axis) for column in columns])
    return means.max(axis=0) - means.min(axis=0)


def gap_p_values(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each config's mean within-seed rank, and the p-value of its gap to the best's: the share of
    within-seed relabellings whose range of mean ranks is at least that gap."""
    ranks = within_seed_ranks(scores)
    means = ranks.mean(axis=0)
    null = permutation_test(
        tuple(ranks.T),
        _range_of_mean_ranks,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative="greater",
        rng=RNG_SEED,
    ).null_distribution
    exact = len(null) < RESAMPLES  # scipy enumerated every relabelling
    gaps = means.max() - means
    hits = (null[None, :] >= gaps[:, None] - 1e-9).sum(axis=1)
    p = hits / len(null) if exact else (hits + 1) / (len(null) + 1)
    return means, np.minimum(p, 1.0)


def eliminate(
    scores: np.ndarray, alive: Sequence[int], alpha: float
) -> tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]]:
    """Test the configs of `alive` on `scores` (rows: seeds, columns: all configs) by the step-down range
    test at `alpha`: the first step's (config, mean rank, p) for each, and the configs shown worse than the
    best, (config, mean rank, adjusted p) each, in the order they fell (a later step's p is at least an
    earlier one's, as step-down adjusted p-values are)."""
    alive, tested, dropped, floor = list(alive), [], [], 0.0
    while len(alive) > 1:
        means, p = gap_p_values(scores[:, alive])
        tested = tested or [(c, float(means[i]), float(p[i])) for i, c in enumerate(alive)]
        p = np.maximum(p, floor)
        out = [i for i in range(len(alive)) if p[i] <= alpha]
        if not out:
            break
        floor = float(p[out].max())
        dropped += [(alive[i], float(means[i]), float(p[i])) for i in out]
        alive = [c for i, c in enumerate(alive) if i not in out]
    return tested, dropped


def seeds_to_add(alive: int, seeds: int, used: int, rules: Rules, configs: int) -> int:
    """Seeds each survivor gets next round: seeds_per_round, fewer near max_seeds, none when a round
    would pass the budget."""
    affordable = (rules.budget(configs) - used) // alive
    return max(0, min(rules.seeds_per_round, rules.max_seeds - seeds, affordable))


Scorer = Callable[[list[tuple[int, int]]], list[float | None]]
RoundHook = Callable[[int, int, list[tuple[int, float, float]], list[tuple[int, float, float]]], None]


def run_race(
    configs: int,
    rules: Rules,
    score: Scorer,
    stopping: Callable[[], bool] = lambda: False,
    on_round: RoundHook = lambda round_, seeds, tested, fallen: None,
) -> Race:
    """Race `configs` configs: `score` runs a round's (config, seed index) jobs and returns their scores
    (None: failed); every config runs first_seeds seeds, then each round tests the survivors and gives
    the rest more seeds, until one is left, the budget or max_seeds is reached, or `stopping()`.
    `on_round(round, seeds, tested, fallen)` hears each round's test as it is made."""
    table = np.full((rules.max_seeds, configs), np.nan)
    scores: dict[tuple[int, int], float] = {}
    alive, drops, tests = list(range(configs)), [], []
    seeds, target, rounds = 0, min(rules.first_seeds, rules.max_seeds), 0
    if configs * target > rules.budget(configs):
        target = 0
    ended = BUDGET
    while target > seeds:
        jobs = [(c, s) for s in range(seeds, target) for c in alive]
        values = score(jobs)
        if stopping():  # the round's jobs were cut short: none of them counts
            ended = STOPPED
            break
        for (c, s), value in zip(jobs, values, strict=True):
            scores[(c, s)] = table[s, c] = math.nan if value is None else value
        rounds += 1
        seeds = target
        if len(alive) > 1:
            tested, fallen = eliminate(table[:seeds], alive, rules.alpha)
            tests.append((seeds, tested))
            best, best_rank, _ = max(tested, key=lambda row: row[1])
            on_round(rounds, seeds, tested, fallen)
            drops += [Drop(c, rounds, seeds, rank, best, best_rank, p) for c, rank, p in fallen]
            alive = [c for c in alive if c not in {c for c, _, _ in fallen}]
        if len(alive) == 1:
            ended = SEPARATED
            break
        add = seeds_to_add(len(alive), seeds, len(scores), rules, configs)
        if add == 0:
            ended = MAX_SEEDS if seeds >= rules.max_seeds else BUDGET
            break
        target = seeds + add
    return Race(scores, tuple(alive), tuple(drops), ended, rounds, tests)
