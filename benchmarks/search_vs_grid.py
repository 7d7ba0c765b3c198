"""A TPE search with pruning against the grid on one budget: env steps spent, wall time, pruned share, best config.

In a temporary project (its own mlruns), runs the grid `batch_size=64,128,256 lr=1e-4,3e-4,1e-3` and an Optuna
search (TPE, median pruner) over lr log-uniform in [1e-4, 3e-3] x batch_size in {64, 128, 256}, with the same
number of configs (9 trials) and seeds (3 per config, the same seeds), both on joblib with `--workers` workers.
A job's env steps are the step of its last greedy evaluation (where it ended, or where it was pruned). Prints
one markdown table; the budget is what the flags say. `--grid-space` searches the grid's own 9 points
instead (lr as a choice), and `--search-only` skips the grid.

    .venv/bin/python benchmarks/search_vs_grid.py --steps 15000 --eval-every 2500 --workers 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from mlflow import MlflowClient

GRID = ["batch_size=64,128,256", "lr=0.0001,0.0003,0.001", "seed=0,1,2"]
SEARCH = [
    "hydra/sweeper=optuna",
    "lr=tag(log, interval(1e-4, 3e-3))",
    "batch_size=choice(64, 128, 256)",
    "hydra.sweeper.n_trials=9",
    "hydra.sweeper.seeds_per_trial=3",
    "hydra.sweeper.study_name=bench",
]
GRID_SPACE = ["lr=choice(0.0001, 0.0003, 0.001)", "hydra.sweeper.sampler_seed=0"]


def budget(args: argparse.Namespace) -> list[str]:
    return [
        f"total_steps={args.steps}",
        f"eval_every={args.eval_every}",
        f"eval_episodes={args.eval_episodes}",
        f"final_eval_episodes={args.final_episodes}",
        f"hydra.launcher.n_jobs={args.workers}",
        "hydra/launcher=joblib",
        "checkpoint_every=0",
        "mlflow.log_model=false",
    ]


def run(project: Path, overrides: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dqn.train", "-m", *overrides], cwd=project, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(overrides[:3])}... exited {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def jobs(client: MlflowClient, sweep_id: str) -> list:
    experiment = client.get_experiment_by_name("dqn-lunar-lander").experiment_id
    return client.search_runs([experiment], f"tags.sweep_id = '{sweep_id}' and tags.`dqn.role` = 'job'")


def last_step(client: MlflowClient, run) -> int:
    return max((m.step for m in client.get_metric_history(run.info.run_id, "eval_return_mean")), default=0)


def summary(client: MlflowClient, runs: list, seconds: float) -> dict:
    """Env steps, jobs, pruned share and the best config by the mean of its seeds' final scores."""
    groups: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        if run.info.status == "FINISHED" and "final_eval_return_mean" in run.data.metrics:
            groups[run.data.tags["group"]].append(run.data.metrics["final_eval_return_mean"])
    complete = {group: scores for group, scores in groups.items() if len(scores) == 3}
    best = max(complete, key=lambda group: statistics.mean(complete[group]))
    pruned = [run for run in runs if run.data.tags.get("pruned") == "true"]
    trials = {run.data.tags.get("trial_number", run.data.tags["group"]) for run in runs}
    pruned_trials = {run.data.tags.get("trial_number") for run in pruned}
    return {
        "jobs": len(runs),
        "env_steps": sum(last_step(client, run) for run in runs),
        "seconds": seconds,
        "pruned": f"{len(pruned_trials)}/{len(trials)} trials ({len(pruned)} jobs)",
        "best": best,
        "best_mean": statistics.mean(complete[best]),
        "best_seeds": ", ".join(f"{score:.0f}" for score in complete[best]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15000)
    parser.add_argument("--eval-every", type=int, default=2500)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--final-episodes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grid-space", action="store_true", help="search the grid's 9 points")
    parser.add_argument("--search-only", action="store_true", help="leave the grid out")
    args = parser.parse_args()
    search = [o for o in SEARCH if not o.startswith("lr=")] + GRID_SPACE if args.grid_space else SEARCH
    methods = (
        [("TPE + median pruner", search)] if args.search_only else [("grid 3x3", GRID), ("TPE + median pruner", search)]
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
        for name, overrides in methods:
            seconds = run(project, overrides + budget(args))
            experiment = client.get_experiment_by_name("dqn-lunar-lander").experiment_id
            parent = client.search_runs([experiment], "tags.`dqn.role` = 'sweep'", order_by=["start_time DESC"])[0]
            rows[name] = summary(client, jobs(client, parent.data.tags["sweep_id"]), seconds)
    print(
        f"Budget per job: {args.steps} env steps, an evaluation of {args.eval_episodes} episodes every "
        f"{args.eval_every}, final {args.final_episodes} episodes; 9 configs x 3 seeds; {args.workers} joblib workers."
    )
    print("| method | jobs | env steps | wall s | pruned | best config (mean of 3 seeds' final score) | seeds |")
    print("|---|---:|---:|---:|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['jobs']} | {r['env_steps']:,} | {r['seconds']:.0f} | {r['pruned']} | "
            f"{r['best']}: {r['best_mean']:.1f} | {r['best_seeds']} |"
        )


if __name__ == "__main__":
    main()
