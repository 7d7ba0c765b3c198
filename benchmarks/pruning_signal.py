"""Which early signal should a pruner judge a trial by? Measured on a finished grid's runs.

For every evaluation step s, over the grid's jobs: the Spearman rank correlation between a signal at s
and the run's final score (final_eval_return_mean), per seed and per config (the mean over its seeds),
for two signals: the latest greedy evaluation at s, and the running mean of the evaluations up to s
(what `dqn.search.trial` reports). Then a simulated median pruner, as Optuna's MedianPruner judges: draw
2 seeds per config (as a trial's first two jobs); a config is cut when the best value its 2-seed signal
has had up to s is below the median of the other configs' values at s; count how often the 3 configs
with the best final scores are cut, and the 3 with the worst (a good signal cuts the worst often and the
best rarely; the best-so-far of a noisy signal flatters it, so it cuts less of both).

    .venv/bin/python benchmarks/pruning_signal.py --project ~/lo-bench   # after benchmarks/search_vs_grid.py
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from scipy.stats import spearmanr

from dqn.search.trial import EVALS, trial_means

STEPS = (10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 75_000)


def latest(seeds: list[dict[int, float]]) -> dict[int, float]:
    """The signal the search reported before: at each step, the seeds' mean evaluation there."""
    return {step: float(np.mean([evals[step] for evals in seeds])) for step in seeds[0]}


def running(seeds: list[dict[int, float]]) -> dict[int, float]:
    """The signal the search reports now: `dqn.search.trial.trial_means` itself."""
    return trial_means(
        {f"{EVALS}{n}": {str(step): value for step, value in evals.items()} for n, evals in enumerate(seeds)},
        range(len(seeds)),
    )


SIGNALS = (latest, running)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the folder search_vs_grid.py ran in")
    parser.add_argument("--experiment", default="local-optimum-grid")
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    client = MlflowClient(f"sqlite:///{args.project.resolve() / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(args.experiment).experiment_id
    jobs = client.search_runs([experiment], "tags.`dqn.role` = 'job' and attributes.status = 'FINISHED'")
    evals = {r.info.run_id: {m.step: m.value for m in client.get_metric_history(r.info.run_id, "eval_return_mean")}
             for r in jobs}  # fmt: skip
    final = {r.info.run_id: r.data.metrics["final_eval_return_mean"] for r in jobs}
    per_seed = [{i: signal([evals[i]]) for i in evals} for signal in SIGNALS]
    configs: dict[str, list[str]] = defaultdict(list)
    for run in jobs:
        configs[run.data.tags["group"]].append(run.info.run_id)
    truth = {config: np.mean([final[i] for i in ids]) for config, ids in configs.items()}
    ranked = sorted(truth, key=truth.get)
    top, bottom = ranked[-3:], ranked[:3]
    rng = np.random.default_rng(0)
    draws = [
        {c: [evals[i] for i in rng.choice(configs[c], 2, replace=False)] for c in configs} for _ in range(args.draws)
    ]
    pairs = [[{c: signal(seeds) for c, seeds in draw.items()} for draw in draws] for signal in SIGNALS]
    print(f"{len(jobs)} runs in {len(configs)} configs of {args.experiment}; top 3 by final score: {', '.join(top)}\n")
    print("| step | Spearman, seeds: latest eval | running mean | configs: latest eval | running mean "
          "| cut, top 3 / worst 3: latest eval | running mean |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for step in STEPS:
        ids = [i for i in final if step in evals[i]]
        names = [c for c in configs if all(i in ids for i in configs[c])]
        seeds = [spearmanr([signal[i][step] for i in ids], [final[i] for i in ids])[0] for signal in per_seed]
        means = [[np.mean([signal[i][step] for i in configs[c]]) for c in names] for signal in per_seed]
        groups = [spearmanr(mean, [truth[c] for c in names])[0] for mean in means]
        cut = [[0, 0], [0, 0]]  # [signal][top, worst]
        for k, drawn in enumerate(pairs):
            for pair in drawn:  # MedianPruner: a trial's best so far against the others' median at the step
                for which, judged in enumerate((top, bottom)):
                    for c in judged:
                        best = max(value for t, value in pair[c].items() if t <= step)
                        cut[k][which] += best < np.median([pair[o][step] for o in names if o != c])
        share = [[f"{100 * n / (args.draws * 3):.0f}%" for n in row] for row in cut]
        print(f"| {step:,} | {seeds[0]:.2f} | {seeds[1]:.2f} | {groups[0]:.2f} | {groups[1]:.2f} | "
              f"{share[0][0]} / {share[0][1]} | {share[1][0]} / {share[1][1]} |")  # fmt: skip


if __name__ == "__main__":
    main()
