"""Racing against the fixed grid on real LunarLander runs: replay `dqn.racing`'s race on the scores a grid sweep
recorded, and put what each spent beside the answer each gives.

A race runs seeds 0, 1, 2, ... of every config still in contention; a grid of n seeds already holds each of
those jobs, so replaying the race on the grid's own scores (at most n seeds a config) is exactly the race that
would have run, on the same jobs, with the same decisions (`dqn.racing` is deterministic given its scores).
What it cannot show is a race that goes past the grid's n seeds.

    python benchmarks/race_replay.py --tracking-uri sqlite:///<project>/mlruns/mlflow.db [--sweep-id ID]
"""

from __future__ import annotations

import argparse

from mlflow import MlflowClient

from dqn.racing.elimination import Rules, run_race
from dqn.report.design import analyse
from dqn.report.statistics import stats_by_group, verdict
from dqn.report.sweep_report import find_sweep, one_per_seed, seed_run, sweep_jobs
from dqn.tracking.store import experiment_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default=experiment_name(None))
    parser.add_argument("--sweep-id", default=None, help="default: the most recent sweep")
    parser.add_argument("--first-seeds", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()

    client = MlflowClient(args.tracking_uri)
    parent = find_sweep(client, args.experiment, args.sweep_id)
    jobs, _ = one_per_seed(sweep_jobs(client, parent))
    finished = [job for job in jobs if job.info.status == "FINISHED"]
    runs = {(seed.group, seed.seed): (seed, job) for job in finished for seed in [seed_run(client, job)]}
    groups = sorted({group for group, _ in runs})
    seeds = sorted({seed for _, seed in runs})
    steps = {int(job.data.params["total_steps"]) for _, job in runs.values()}
    seconds = {key: (job.info.end_time - job.info.start_time) / 1000 for key, (_, job) in runs.items()}
    missing = [(g, s) for g in groups for s in seeds if (g, s) not in runs]
    if missing or len(steps) != 1:
        raise SystemExit(f"error: the grid is not complete and uniform: missing {missing}, total_steps {steps}")
    (total_steps,) = steps

    def score(round_jobs: list[tuple[int, int]]) -> list[float | None]:
        return [runs[(groups[c], seeds[s])][0].score for c, s in round_jobs]

    rules = Rules(args.first_seeds, 1, len(seeds), None, args.alpha)
    race = run_race(len(groups), rules, score)
    used = [(groups[c], seeds[s]) for c, s in race.scores]

    seed_runs = [seed for seed, _ in runs.values()]
    rows = stats_by_group(seed_runs)
    grid_verdict = verdict(rows)
    lines = analyse(seed_runs).lines()
    print(
        f"sweep {parent.data.tags['sweep_id']}: {len(groups)} configs x {len(seeds)} seeds, "
        f"{total_steps} env steps a job"
    )
    print()
    print("| design | jobs | env steps | job-seconds | wall on 2 workers (est.) | answer |")
    print("|---|---|---|---|---|---|")
    grid_seconds = sum(seconds.values())
    best = max(rows, key=lambda row: row.iqm if row.iqm is not None else float("-inf"))
    print(
        f"| grid | {len(runs)} | {len(runs) * total_steps:,} | {grid_seconds:,.0f} | {grid_seconds / 2 / 60:.0f} min "
        f"| best {best.group} (IQM {best.iqm:.1f}); {grid_verdict.headline} |"
    )
    race_seconds = sum(seconds[key] for key in used)
    left = ", ".join(groups[c] for c in race.alive)
    print(
        f"| race (first {rules.first_seeds} seeds, alpha {rules.alpha}) | {len(used)} | {len(used) * total_steps:,} "
        f"| {race_seconds:,.0f} | {race_seconds / 2 / 60:.0f} min | ended {race.ended}: left {left} |"
    )
    print()
    for drop in race.drops:
        print(
            f"- dropped {groups[drop.config]} in round {drop.round} at {drop.seeds} seeds "
            f"(mean rank {drop.mean_rank:.2f} vs {drop.best_mean_rank:.2f} for {groups[drop.best]}, "
            f"p={drop.p_value:.3g})"
        )
    print("- grid's per-key analysis: " + " / ".join(lines))


if __name__ == "__main__":
    main()
