"""How often the sweep report's verdict is wrong, before and after the 2026-11-29 change: a simulation.

Two groups of seeds per simulated sweep, final returns drawn from the audit's bimodal mixture
0.7 N(240, 30) + 0.3 N(100, 60) (a solved mode and a stuck one; true IQM 219.3):
- false claims: both groups from the mixture; the share of sweeps in which the verdict calls one better;
- power: one group shifted by +20.7 (true IQM 240); the share in which it is called better (240 vs 219);
- CI coverage: the share of groups whose printed 95% CI holds the true IQM.

    python benchmarks/verdict_audit.py [--sweeps 1000] [--seed 0]

The old rule (before 2026-11-29) is re-implemented below, labelled as such; the new one is dqn.report.statistics.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import norm

from dqn.report.statistics import SeedRun, bootstrap_ci, iqm, summarize, verdict

WEIGHTS, MEANS, STDS = (0.7, 0.3), (240.0, 100.0), (30.0, 60.0)
SEEDS_PER_GROUP = (2, 3, 5, 10)


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


# --- the old rule, as the report had it before 2026-11-29 (re-implemented here for comparison only) ---


def old_ci(scores: np.ndarray) -> tuple[float, float]:
    """OLD: the percentile bootstrap CI of the IQM at every seed count (at 4 or fewer: the min and max)."""
    low, high = bootstrap_ci(scores[:, None])
    return float(low[0]), float(high[0])


def old_rule(a: np.ndarray, b: np.ndarray) -> str | None:
    """OLD: the group with the higher IQM is "separated" when its CI's low end is above the other's high end."""
    (best, best_scores), (other, other_scores) = sorted([("a", a), ("b", b)], key=lambda kv: -iqm(kv[1]))
    return best if old_ci(best_scores)[0] > old_ci(other_scores)[1] else None


# --- the new rule: dqn.report.statistics as it is ---


def new_rule(a: np.ndarray, b: np.ndarray) -> str | None:
    """NEW: the group the verdict calls better than the other (Holm-adjusted permutation test), if any."""
    runs = [SeedRun(group, i, float(v)) for group, scores in (("a", a), ("b", b)) for i, v in enumerate(scores)]
    result = verdict(summarize(runs))
    return result.best.group if any(c.separated for c in result.comparisons) else None


def new_ci(scores: np.ndarray) -> tuple[float, float] | None:
    """NEW: the report's CI, None where it prints none (under 5 seeds)."""
    (row,) = summarize([SeedRun("g", i, float(v)) for i, v in enumerate(scores)])
    return None if row.ci_low is None else (row.ci_low, row.ci_high)


def audit(n: int, sweeps: int, seed: int, target: float) -> dict[str, float | None]:
    """Rates over `sweeps` simulated two-group sweeps of `n` seeds per group."""
    rng = np.random.default_rng([seed, n])
    shift = 240.0 - target
    counts = dict.fromkeys(("old_false", "new_false", "old_power", "new_power", "old_cover", "new_cover"), 0)
    new_intervals = 0
    for _ in range(sweeps):
        a, b = draw(rng, n), draw(rng, n)
        counts["old_false"] += old_rule(a, b) is not None
        counts["new_false"] += new_rule(a, b) is not None
        low, high = old_ci(a)
        counts["old_cover"] += low <= target <= high
        interval = new_ci(a)
        if interval is not None:
            new_intervals += 1
            counts["new_cover"] += interval[0] <= target <= interval[1]
        shifted, base = draw(rng, n, shift), draw(rng, n)
        counts["old_power"] += old_rule(shifted, base) == "a"
        counts["new_power"] += new_rule(shifted, base) == "a"
    rates: dict[str, float | None] = {key: value / sweeps for key, value in counts.items()}
    rates["new_cover"] = counts["new_cover"] / new_intervals if new_intervals else None
    return rates


def table(rows: dict[int, dict[str, float | None]], sweeps: int, target: float) -> str:
    def cell(value: float | None) -> str:
        return "no CI" if value is None else f"{value:.1%}"

    lines = [
        f"{sweeps} simulated two-group sweeps per cell; true IQM {target:.1f}; alpha 0.05",
        "| seeds per group | false claims: old | new | power 240 vs 219: old | new | CI coverage: old | new |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, r in rows.items():
        cells = [r["old_false"], r["new_false"], r["old_power"], r["new_power"], r["old_cover"], r["new_cover"]]
        lines.append(f"| {n} | " + " | ".join(cell(value) for value in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=1000, help="simulated sweeps per seed count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    target = true_iqm()
    start = time.perf_counter()
    rows = {n: audit(n, args.sweeps, args.seed, target) for n in SEEDS_PER_GROUP}
    print(table(rows, args.sweeps, target))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
