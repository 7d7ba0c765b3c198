"""How racing spends seeds, and how often it drops a config it should not: a simulation of `dqn.racing`.

The 3 x 3 design of `sweep=local_optimum_race` (3 seeds each first, at most 10, 45 jobs, alpha 0.05), with
final returns drawn from the bimodal mixture of benchmarks/verdict_audit.py (0.7 N(240, 30) + 0.3 N(100, 60)):
- null: the 9 configs equal; any drop is a false one (each round's test holds its level, repeated looks do not);
- lr effect: the three learning rates shifted 0, -26 and -60 (the level means a full-budget `make sweep` gave,
  230 / 204 / 170, issue 22), batch size without effect: 3 configs are best, 6 worse;
- one lr out: the same with the slowest learning rate at -150 (a tier that does not take off).
Beside each, the fixed grid of 5 seeds a config (45 jobs) for the same question.

    python benchmarks/race_audit.py [--races 200] [--seed 0] [--case "lr out"]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from dqn.racing.elimination import Rules, run_race

WEIGHTS, MEANS, STDS = (0.7, 0.3), (240.0, 100.0), (30.0, 60.0)
RULES = Rules(first_seeds=3, seeds_per_round=1, max_seeds=10, seed_budget=45, alpha=0.05)
BUDGETS = (45, 90)  # the grid's own 45 jobs (sweep=local_optimum_race), and twice that
LR_SHIFTS = (0.0, -26.0, -60.0)
OUT_SHIFTS = (0.0, -26.0, -150.0)  # the same, but the slowest learning rate's seeds do not take off


def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    solved = rng.random(shape) < WEIGHTS[0]
    return np.where(solved, rng.normal(MEANS[0], STDS[0], shape), rng.normal(MEANS[1], STDS[1], shape))


def simulate(shifts: np.ndarray, rules: Rules, races: int, rng: np.random.Generator) -> dict[str, float]:
    """Race `races` times over configs shifted by `shifts`; the shares and means a table row reports."""
    best = set(np.flatnonzero(shifts == shifts.max()))
    worse = len(shifts) - len(best)
    any_drop = best_dropped = worse_dropped = jobs = 0
    seeds_best, seeds_worse = [], []
    for _ in range(races):
        table = draw(rng, (rules.max_seeds, len(shifts))) + shifts
        race = run_race(len(shifts), rules, lambda batch, t=table: [t[s, c] for c, s in batch])
        any_drop += bool(race.drops)
        best_dropped += any(d.config in best for d in race.drops)
        worse_dropped += sum(d.config not in best for d in race.drops) / max(worse, 1)
        jobs += len(race.scores)
        seeds_best.append(np.mean([race.seeds_of(c) for c in best]))
        others = [race.seeds_of(c) for c in range(len(shifts)) if c not in best]
        seeds_worse.append(np.mean(others) if others else np.nan)
    return {
        "any config dropped": any_drop / races,
        "a best config dropped": best_dropped / races,
        "share of worse configs dropped": worse_dropped / races if worse else float("nan"),
        "jobs": jobs / races,
        "seeds per best config": float(np.mean(seeds_best)),
        "seeds per worse config": float(np.nanmean(seeds_worse)) if worse else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--races", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", default="", help="only the cases whose name holds this text")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.time()
    cases = {
        "null (9 equal configs)": np.zeros(9),
        "lr effect (3 best, 6 worse)": np.repeat(LR_SHIFTS, 3),
        "one lr out (3 best, 3 at -26, 3 at -150)": np.repeat(OUT_SHIFTS, 3),
    }
    cases = {name: shifts for name, shifts in cases.items() if args.case in name}
    rows = {
        f"{name}, budget {budget}": simulate(shifts, replace(RULES, seed_budget=budget), args.races, rng)
        for name, shifts in cases.items()
        for budget in BUDGETS
    }
    keys = list(next(iter(rows.values())))
    print(f"{args.races} races per case, rules {RULES} (budget as shown); the fixed grid: 5 seeds per config\n")
    print("| case | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    print(f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
