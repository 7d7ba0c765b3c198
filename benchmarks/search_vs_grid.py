"""The local_optimum grid against the local_optimum Optuna search, then both picks re-trained on fresh seeds.

Runs, in `--project` (kept, so the MLflow UI and `dqn.cli.compare` can open it afterwards; a temporary
folder when not given), the two ready experiments exactly as `make sweep` and `make search` do
(`sweep=local_optimum`, `search=local_optimum`, joblib on `--workers` workers), each in its own MLflow
experiment, then re-trains each one's pick on `--fresh-seeds` seeds neither of them used. A phase whose
sweep already finished in the project is read back, not run again, so a stopped benchmark continues.

Prints one markdown table: jobs, env steps spent (a job's steps are those of its last greedy evaluation:
where it ended, or where it was pruned), wall seconds, pruned trials, the pick, and the pick's fresh seeds
scored by the report's statistics (IQM of final_eval_return_mean with its bootstrap CI, seeds >= 200)
next to the score that picked it (the search's best trial value, the mean of its 3 seeds; the grid's best
group's IQM over 5 seeds), both chosen as the best of several and so rated high. `--replicates N` adds N
searches with seeded samplers: one search is one draw of what the method picks.

    .venv/bin/python benchmarks/search_vs_grid.py --project ~/lo-bench --replicates 2  # the full budget
    .venv/bin/python benchmarks/search_vs_grid.py --steps 15000 --eval-every 2500  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from dqn.report.statistics import stats_by_group, verdict
from dqn.report.sweep_report import markdown_table, search_all, seed_run

GRID, SEARCH = "local-optimum-grid", "local-optimum-search"
FRESH = "fresh-seeds-"  # + the method: the experiment of its pick re-trained on fresh seeds
METHODS = {SEARCH: ["search=local_optimum"], GRID: ["sweep=local_optimum"]}


def methods(replicates: int) -> dict[str, list[str]]:
    """The two ready experiments, then `replicates` more searches whose samplers are seeded 1, 2, ...:
    one search is one draw of what the method picks."""
    more = {
        f"{SEARCH}-{i}": ["search=local_optimum", f"hydra.sweeper.sampler_seed={i}"] for i in range(1, replicates + 1)
    }
    return METHODS | more


def budget(args: argparse.Namespace) -> list[str]:
    """Overrides for a smaller budget than the configs' own; none at the full budget."""
    flags = {
        "total_steps": args.steps,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "final_eval_episodes": args.final_episodes,
    }
    return [f"{key}={value}" for key, value in flags.items() if value is not None]


def train(project: Path, experiment: str, overrides: list[str], workers: int) -> float:
    """One multirun in `project`; its wall seconds. Exits with the command's error if it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    command = [sys.executable, "-m", "dqn.train", "-m", *overrides, f"mlflow.experiment_name={experiment}"]
    command += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}"]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    (project / f"{experiment}.log").open("a").write(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(overrides)} exited {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def parents(client: MlflowClient, experiment: str) -> list[Run]:
    """The experiment's finished sweeps, oldest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = search_all(client, found.experiment_id, "tags.`dqn.role` = 'sweep'", ["attributes.start_time ASC"])
    return [run for run in runs if run.info.status == "FINISHED"]


def jobs(client: MlflowClient, parent: Run) -> list[Run]:
    sweep = f"tags.sweep_id = '{parent.data.tags['sweep_id']}'"
    runs = search_all(client, parent.info.experiment_id, sweep, ["attributes.start_time ASC"])
    return [run for run in runs if run.data.tags.get("dqn.role") == "job"]


def env_steps(client: MlflowClient, run: Run) -> int:
    return max((m.step for m in client.get_metric_history(run.info.run_id, "eval_return_mean")), default=0)


def pick(parent: Run) -> list[str]:
    """The sweep's chosen config as overrides: the search's best trial, or the grid report's best group."""
    if "best_params" in parent.data.tags:
        return [f"{key}={value}" for key, value in json.loads(parent.data.tags["best_params"]).items()]
    return parent.data.tags["best_group"].split(",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="folder for runs/ and mlruns/ (kept); default: a temporary one")
    parser.add_argument("--steps", type=int, help="total_steps of every job (default: the configs' 100k)")
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--eval-episodes", type=int)
    parser.add_argument("--final-episodes", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh-seeds", type=int, default=10, help="seeds each pick is re-trained on; 0 skips it")
    parser.add_argument("--first-fresh-seed", type=int, default=1000)
    parser.add_argument("--replicates", type=int, default=0, help="more searches, their samplers seeded 1, 2, ...")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = (args.project or Path(tmp)).resolve()
        project.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
        recorded = project / "budget.json"  # a project holds one budget: its finished phases are reused
        if recorded.exists() and json.loads(recorded.read_text()) != budget(args):
            sys.exit(f"error: {project} holds runs at budget {recorded.read_text()}: use another --project")
        recorded.write_text(json.dumps(budget(args)))
        seconds = json.loads((project / "seconds.json").read_text()) if (project / "seconds.json").exists() else {}
        for experiment, overrides in methods(args.replicates).items():
            if not parents(client, experiment):
                seconds[experiment] = train(project, experiment, overrides + budget(args), args.workers)
                (project / "seconds.json").write_text(json.dumps(seconds))
        picks = {experiment: pick(parents(client, experiment)[-1]) for experiment in methods(args.replicates)}
        fresh = f"seed=range({args.first_fresh_seed},{args.first_fresh_seed + args.fresh_seeds})"
        for experiment, overrides in picks.items() if args.fresh_seeds else ():
            if not parents(client, FRESH + experiment):
                overrides = overrides + [fresh] + budget(args)
                seconds[FRESH + experiment] = train(project, FRESH + experiment, overrides, args.workers)
                (project / "seconds.json").write_text(json.dumps(seconds))
        print_tables(client, picks, seconds, args)
        print(f"\nProject: {project}" + ("" if args.project else " (temporary, removed)"))


def print_tables(client: MlflowClient, picks: dict[str, list[str]], seconds: dict, args: argparse.Namespace) -> None:
    """The methods' table, then the picks' fresh seeds compared by the sweep report's statistics."""
    fresh_runs = [
        replace(seed_run(client, run), group=f"{experiment} pick: {','.join(picks[experiment])}")
        for experiment in picks
        for parent in parents(client, FRESH + experiment)[-1:]
        for run in jobs(client, parent)
    ]
    rows = stats_by_group(fresh_runs)
    print(f"\nBudget: {args.steps or 'the configs'} env steps a job; {args.workers} joblib workers.\n")
    print(
        "| method | jobs | env steps | wall s | pruned trials | pick | its score there | "
        "fresh seeds: IQM [95% CI] | >= 200 |"
    )
    print("|---|---:|---:|---:|---|---|---:|---|---|")
    for experiment in picks:
        parent = parents(client, experiment)[-1]
        runs = jobs(client, parent)
        there = parent.data.metrics.get("best_value", parent.data.metrics.get("best_group_iqm", float("nan")))
        trials = {run.data.tags.get("trial_number") for run in runs}
        pruned = {run.data.tags.get("trial_number") for run in runs if run.data.tags.get("trial_state") == "PRUNED"}
        row = next((row for row in rows if row.group.startswith(f"{experiment} pick")), None)
        score = f"{row.iqm:.1f} [{row.ci_low:.1f}, {row.ci_high:.1f}]" if row and row.ci_low is not None else "-"
        print(
            f"| {experiment} | {len(runs)} | {sum(env_steps(client, run) for run in runs):,} | "
            f"{seconds.get(experiment, float('nan')):.0f} | "
            f"{f'{len(pruned)}/{len(trials)}' if None not in trials else '-'} | {','.join(picks[experiment])} | "
            f"{there:.1f} | {score} | {row.seeds_solved if row else '-'} |"
        )
    if rows:
        print("\nThe picks on fresh seeds (dqn.report.statistics):\n")
        print(markdown_table(rows))
        result = verdict(rows)
        print("\n" + "\n".join([result.headline, *result.details]))


if __name__ == "__main__":
    main()
