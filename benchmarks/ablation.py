"""Which of our additions lifts the exercise's agent out of its local optimum: an ablation on the same seeds.

Runs `experiment=exercise` (the exercise's agent, docs/local_optimum.md), then that agent plus each of
our additions alone, at today's default value: a target network (hard copy every 250 steps), Double DQN
(with that target network: without one, the online network would rate its own pick, which is plain
DQN), 3-step targets, LayerNorm, keep_best; then today's default config as it ships. Each variant is one
sweep of the real entry point (`python -m dqn.train -m ... seed=range(...)`, joblib on `--jobs`
workers) in its own MLflow experiment in `--project`; a variant whose sweep already finished there is
read back, not run again, so a stopped ablation continues. Every variant runs `--steps` env steps.

Prints one markdown table, the seeds scored by the report's statistics (`dqn.report.statistics`): the
mean and IQM of final_eval_return_mean (50 fresh greedy episodes of the delivered weights, standard
1000-step limit), seeds >= 200, hovering seeds (more than half the final episodes cut by the time
limit, the report's definition) with Fisher's exact test against the exercise's count, stalled seeds
(no in-training evaluation ever reached 0: the run that never takes off), seeds whose evaluation
reached 200 and their median steps to it.

    .venv/bin/python benchmarks/ablation.py --project ~/ablation                   # 50k steps, 5 seeds
    .venv/bin/python benchmarks/ablation.py --steps 20000 --seeds 3 --jobs 2        # a reduced budget
    .venv/bin/python benchmarks/ablation.py --dry-run                               # the commands only
    .venv/bin/python benchmarks/ablation.py --project ~/ablation --table-only       # what has finished there
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from scipy.stats import fisher_exact

from dqn.config import TrainConfig
from dqn.report.statistics import HOVER, SeedRun, stalls, stats_by_group
from dqn.report.sweep_report import search_all, seed_run

EXERCISE = ["experiment=exercise"]
_DEFAULT = TrainConfig()
TARGET = [f"target_update_interval={_DEFAULT.target_update_interval}", f"tau={_DEFAULT.tau}"]
VARIANTS: dict[str, list[str]] = {
    "exercise": EXERCISE,
    "+ target network": EXERCISE + TARGET,
    "+ Double DQN (and target network)": EXERCISE + TARGET + ["double_q=true"],
    f"+ {_DEFAULT.n_step}-step targets": EXERCISE + [f"n_step={_DEFAULT.n_step}"],
    "+ LayerNorm": EXERCISE + ["network.layer_norm=true"],
    "+ keep_best": EXERCISE + ["keep_best=true"],
    "today's default": [],
}
"""Each variant's overrides; the additions take their values from dqn.config's defaults (one source)."""


def experiment_name(variant: str) -> str:
    """The variant's MLflow experiment: `ablation-` and its name, letters and digits only."""
    return "ablation-" + "-".join("".join(c if c.isalnum() else " " for c in variant.lower()).split())


def command(variant: str, args: argparse.Namespace) -> list[str]:
    """The variant's sweep: the real entry point, every seed one job, every budget key stated."""
    budget = [
        f"total_steps={args.steps}",
        f"seed=range({args.first_seed},{args.first_seed + args.seeds})",
        f"eval_every={args.eval_every}",
        f"final_eval_episodes={args.final_episodes}",
    ]
    plumbing = [f"mlflow.experiment_name={experiment_name(variant)}", "hydra/launcher=joblib"]
    plumbing.append(f"hydra.launcher.n_jobs={args.jobs}")
    return [sys.executable, "-m", "dqn.train", "-m", *VARIANTS[variant], *budget, *plumbing]


def train(project: Path, variant: str, args: argparse.Namespace) -> None:
    """Run one variant's sweep in `project`. Exits with the command's error if it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(command(variant, args), cwd=project, env=env, capture_output=True, text=True)
    with (project / f"{experiment_name(variant)}.log").open("a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"error: {variant} exited {done.returncode}: {done.stderr[-2000:]}")


def finished_sweep(client: MlflowClient, variant: str) -> Run | None:
    """The variant's last finished sweep (its parent run) in the project, if any."""
    found = client.get_experiment_by_name(experiment_name(variant))
    if found is None:
        return None
    runs = search_all(client, found.experiment_id, "tags.`dqn.role` = 'sweep'", ["attributes.start_time DESC"])
    return next((run for run in runs if run.info.status == "FINISHED"), None)


def seeds_of(client: MlflowClient, parent: Run, variant: str) -> list[SeedRun]:
    """The sweep's jobs as the report reads them, grouped under the variant's name."""
    sweep = f"tags.sweep_id = '{parent.data.tags['sweep_id']}'"
    runs = search_all(client, parent.info.experiment_id, sweep, ["attributes.start_time ASC"])
    return [replace(seed_run(client, run), group=variant) for run in runs if run.data.tags.get("dqn.role") == "job"]


def hovers(run: SeedRun) -> bool:
    return run.truncated is not None and run.truncated > HOVER


def fisher_p(count: int, n: int, base_count: int, base_n: int) -> float:
    """Two-sided Fisher exact p that two yes/no counts (k of n seeds) come from one rate."""
    return float(fisher_exact([[count, n - count], [base_count, base_n - base_count]]).pvalue)


def p_text(count: int, n: int, base_count: int, base_n: int, variant: str) -> str:
    return "-" if variant == "exercise" else f"{fisher_p(count, n, base_count, base_n):.2f}"


def wall_seconds(parent: Run) -> float:
    """The sweep's wall time, as its parent run recorded it (so concurrent invocations need no shared file)."""
    return (parent.info.end_time - parent.info.start_time) / 1000


def table(seeds: dict[str, list[SeedRun]], seconds: dict[str, float]) -> str:
    """One markdown row per variant; the exact tests compare each variant's counts with the exercise's."""
    base = [run for run in seeds["exercise"] if run.score is not None]
    base_hover, base_stall = sum(map(hovers, base)), sum(map(stalls, base))
    lines = [
        "| variant | seeds | mean | IQM | >= 200 | hovering | p (hover vs exercise) | stalled | "
        "p (stall vs exercise) | reached 200 | median steps to 200 | scores | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for variant, runs in seeds.items():
        scored = [run for run in runs if run.score is not None]
        (row,) = stats_by_group(scored) or [None]
        if row is None or not scored:
            lines.append(f"| {variant} | 0 | - | - | - | - | - | - | - | - | - | - | - |")
            continue
        n, hover, stall = len(scored), sum(map(hovers, scored)), sum(map(stalls, scored))
        steps = "-" if row.median_steps_to_200 is None else f"{row.median_steps_to_200:,.0f}"
        lines.append(
            f"| {variant} | {n} | {row.mean:.0f} | {row.iqm:.0f} | {row.seeds_solved} | {hover}/{n} | "
            f"{p_text(hover, n, base_hover, len(base), variant)} | {stall}/{n} | "
            f"{p_text(stall, n, base_stall, len(base), variant)} | {row.n_reached_200}/{n} | {steps} | "
            f"{', '.join(f'{s:.0f}' for s in sorted(run.score for run in scored))} | "
            f"{seconds.get(variant, float('nan')):.0f} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="folder for runs/ and mlruns/ (kept); default: a temporary one")
    parser.add_argument("--steps", type=int, default=50_000, help="total_steps of every job (the exercise's budget)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant, the same for all")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="joblib workers per sweep")
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--final-episodes", type=int, default=50)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--dry-run", action="store_true", help="print each variant's command, run nothing")
    parser.add_argument("--table-only", action="store_true", help="the table of the variants finished in --project")
    args = parser.parse_args(argv)
    if "exercise" not in args.variants:
        parser.error("--variants must include exercise: the others are compared with it")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.dry_run:
        for variant in args.variants:
            print(f"# {variant}\n{shlex.join(command(variant, args)[1:])}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        project = (args.project or Path(tmp)).resolve()
        project.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
        budget = {"steps": args.steps, "seeds": [args.first_seed, args.seeds], "eval_every": args.eval_every,
                  "final_episodes": args.final_episodes}  # fmt: skip
        recorded = project / "budget.json"  # a project holds one budget: its finished variants are reused
        if recorded.exists() and json.loads(recorded.read_text()) != budget:
            sys.exit(f"error: {project} holds runs at budget {recorded.read_text()}: use another --project")
        recorded.write_text(json.dumps(budget))
        for variant in [] if args.table_only else args.variants:
            if finished_sweep(client, variant) is None:
                print(f"$ {shlex.join(command(variant, args)[1:])}", flush=True)
                train(project, variant, args)
        parents = {variant: finished_sweep(client, variant) for variant in args.variants}
        parents = {variant: parent for variant, parent in parents.items() if parent is not None}
        if "exercise" not in parents:
            sys.exit(f"error: no finished exercise sweep in {project} to compare with")
        seeds = {variant: seeds_of(client, parent, variant) for variant, parent in parents.items()}
        seconds = {variant: wall_seconds(parent) for variant, parent in parents.items()}
        print(f"\n{args.steps:,} env steps a job, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}.\n")
        print(table(seeds, seconds))
        print(f"\nProject: {project}" + ("" if args.project else " (temporary, removed)"))


if __name__ == "__main__":
    main()
