"""How often the sweep report's claims are wrong, and how often they find a real difference: a simulation.

Each simulated sweep draws every seed's final return from the audit's bimodal mixture
0.7 N(240, 30) + 0.3 N(100, 60) (a solved mode and a stuck one; true IQM 219.3), in two designs:
2 configs (one key, 2 values) and 9 configs (keys a x b, 3 values each), with 3, 5 or 10 seeds a config.
- null: every config drawn alike; a false claim is any "better than" of the verdict, or any key "matters";
- config +60: config (a=0, b=0) shifted by +60; power is the verdict naming it best and better than every other
  one, and the main-effect test finding a or b;
- level +60 (9 configs only): every config with a=0 shifted by +60; power is the main-effect test finding a.
Three rules side by side: the OLD verdict (before 2026-12-06: permutation test of the IQM difference, Holm
over every pair of groups with 4 seeds or more, re-implemented below for comparison only), the NEW verdict
(dqn.report.statistics.step_down: the best against the rest) and the main-effect test (dqn.report.design).

    nice -n 10 python benchmarks/verdict_audit.py [--sims 100] [--permutations 999] [--seed 0] [--scenario null]

Permutations are fewer than the report's 9,999, to keep the audit to minutes; the p floor stays at 0.001.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import norm, permutation_test, trim_mean

from dqn.report.design import design_of, main_effects
from dqn.report.statistics import ALPHA, SeedRun, holm, iqm, step_down

WEIGHTS, MEANS, STDS = (0.7, 0.3), (240.0, 100.0), (30.0, 60.0)
SEEDS = (3, 5, 10)
SHIFT = 60.0
DESIGNS = {"2 configs": (2, 1), "9 configs (3x3)": (3, 3)}  # values of key a, values of key b
SCENARIOS = ("null", "config +60", "level +60")


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    solved = rng.random(n) < WEIGHTS[0]
    return np.where(solved, rng.normal(MEANS[0], STDS[0], n), rng.normal(MEANS[1], STDS[1], n)) + shift


def true_iqm() -> float:
    """The mixture's IQM: its mean between the 25% and 75% quantiles."""

    def cdf(x: float) -> float:
        return sum(w * norm.cdf(x, m, s) for w, m, s in zip(WEIGHTS, MEANS, STDS, strict=True))

    def density(x: float) -> float:
        return sum(w * norm.pdf(x, m, s) for w, m, s in zip(WEIGHTS, MEANS, STDS, strict=True))

    low, high = (brentq(lambda x, q=q: cdf(x) - q, -500, 800) for q in (0.25, 0.75))
    return quad(lambda x: x * density(x), low, high)[0] / 0.5


def sweep(rng: np.random.Generator, design: tuple[int, int], n: int, scenario: str) -> dict[str, np.ndarray]:
    """Scores per config, named as a sweep names its groups; the shifted config is a=0,b=0."""
    cells = {}
    for a, b in itertools.product(range(design[0]), range(design[1])):
        shifted = (scenario == "config +60" and a == b == 0) or (scenario == "level +60" and a == 0)
        group = f"a={a},b={b}" if design[1] > 1 else f"a={a}"
        cells[group] = draw(rng, n, SHIFT * shifted)
    return cells


# --- the old verdict, as the report had it before 2026-12-06 (re-implemented here for comparison only) ---


def old_p(x: np.ndarray, y: np.ndarray, permutations: int) -> float:
    """OLD: two-sided permutation test of the IQM difference (exact up to `permutations` splits)."""
    result = permutation_test(
        (x, y),
        lambda a, b, axis: trim_mean(a, 0.25, axis=axis) - trim_mean(b, 0.25, axis=axis),
        permutation_type="independent",
        vectorized=True,
        n_resamples=permutations,
        random_state=0,
    )
    return float(result.pvalue)


def old_verdict(cells: dict[str, np.ndarray], permutations: int) -> tuple[str, list[bool]]:
    """OLD: the best by IQM, and per other group whether it is "separated": Holm over every pair (4+ seeds)."""
    ranked = sorted(cells, key=lambda group: -iqm(cells[group]))
    testable = [group for group in ranked if cells[group].size >= 4]
    pairs = list(itertools.combinations(testable, 2))
    adjusted = dict(zip(pairs, holm([old_p(cells[a], cells[b], permutations) for a, b in pairs]), strict=True))
    best = ranked[0]
    separated = [adjusted.get((best, other), adjusted.get((other, best), 1.0)) < ALPHA for other in ranked[1:]]
    return best, separated


# --- the new verdict and the main-effect test: dqn.report as it is ---


def new_verdict(cells: dict[str, np.ndarray], permutations: int) -> tuple[str, list[bool]]:
    ranked = sorted(cells, key=lambda group: -iqm(cells[group]))
    adjusted = step_down([cells[group] for group in ranked], permutations)
    return ranked[0], [p < ALPHA for p in adjusted]


def effects(cells: dict[str, np.ndarray], permutations: int) -> set[str]:
    """The keys the report says matter."""
    runs = [SeedRun(group, seed, float(v)) for group, scores in cells.items() for seed, v in enumerate(scores)]
    design, _ = design_of(runs)
    return {effect.key for effect in main_effects(design, permutations) if effect.matters}


def outcome(scenario: str, cells: dict[str, np.ndarray], permutations: int) -> tuple[float, float, float]:
    """(old verdict, new verdict, main effect): a false claim under the null, a found difference otherwise
    (nan: three configs share the best level, so there is no single best config to find)."""
    shifted = next(iter(cells))  # a=0,b=0
    found = effects(cells, permutations)
    if scenario == "level +60":
        return math.nan, math.nan, "a" in found
    verdicts = []
    for rule in (old_verdict, new_verdict):
        best, separated = rule(cells, permutations)
        verdicts.append(any(separated) if scenario == "null" else best == shifted and all(separated))
    if scenario == "null":
        return verdicts[0], verdicts[1], bool(found)
    return verdicts[0], verdicts[1], bool(found)


def audit(design: tuple[int, int], n: int, scenario: str, sims: int, permutations: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, n, design[0], design[1], SCENARIOS.index(scenario)])
    return np.mean([outcome(scenario, sweep(rng, design, n, scenario), permutations) for _ in range(sims)], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=100, help="simulated sweeps per row")
    parser.add_argument("--permutations", type=int, default=999, help="Monte Carlo permutations per test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="only these (default: all)")
    args = parser.parse_args()
    start = time.perf_counter()
    se = math.sqrt(0.05 * 0.95 / args.sims)
    print(
        f"{args.sims} simulated sweeps per row; true IQM {true_iqm():.1f}; alpha {ALPHA}; Monte Carlo standard "
        f"error of a rate: {se:.1%} at 5%, at most {math.sqrt(0.25 / args.sims):.1%}\n"
    )
    print("| scenario | design | seeds per config | old verdict | new verdict | main effect |")
    print("|---|---|---|---|---|---|")
    for scenario, (name, design), n in itertools.product(args.scenario or SCENARIOS, DESIGNS.items(), SEEDS):
        if scenario == "level +60" and design[1] == 1:
            continue  # with one key a level is a config
        rates = audit(design, n, scenario, args.sims, args.permutations, args.seed)
        cells = " | ".join("-" if math.isnan(rate) else f"{rate:.1%}" for rate in rates)
        print(f"| {scenario} | {name} | {n} | {cells} |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
