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

STEPS = (10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 75_000)


def signals(evals: dict[int, float], step: int) -> tuple[float, float]:
    """(the evaluation at `step`, the mean of the evaluations up to it)."""
    return evals[step], float(np.mean([value for s, value in evals.items() if s <= step]))


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
    configs: dict[str, list[str]] = defaultdict(list)
    for run in jobs:
        configs[run.data.tags["group"]].append(run.info.run_id)
    truth = {config: np.mean([final[i] for i in ids]) for config, ids in configs.items()}
    ranked = sorted(truth, key=truth.get)
    top, bottom = ranked[-3:], ranked[:3]
    rng = np.random.default_rng(0)
    print(f"{len(jobs)} runs in {len(configs)} configs of {args.experiment}; top 3 by final score: {', '.join(top)}\n")
    print("| step | Spearman, seeds: latest eval | running mean | configs: latest eval | running mean "
          "| cut, top 3 / worst 3: latest eval | running mean |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for step in STEPS:
        per_seed = {i: signals(evals[i], step) for i in final if step in evals[i]}
        ids = list(per_seed)
        seeds = [spearmanr([per_seed[i][k] for i in ids], [final[i] for i in ids])[0] for k in (0, 1)]
        names = [c for c in configs if all(i in per_seed for i in configs[c])]
        means = [[np.mean([per_seed[i][k] for i in configs[c]]) for c in names] for k in (0, 1)]
        groups = [spearmanr(means[k], [truth[c] for c in names])[0] for k in (0, 1)]
        earlier = [t for t in sorted(evals[ids[0]]) if t <= step]
        cut = {(k, which): 0 for k in (0, 1) for which in ("top", "bottom")}
        for _ in range(args.draws):
            pairs = {c: rng.choice(configs[c], 2, replace=False) for c in names}
            for k in (0, 1):
                value = {c: np.mean([per_seed[i][k] for i in pairs[c]]) for c in names}
                for which, judged in (("top", top), ("bottom", bottom)):
                    for c in judged:
                        best = max(np.mean([signals(evals[i], t)[k] for i in pairs[c]]) for t in earlier)
                        cut[k, which] += best < np.median([value[o] for o in names if o != c])
        share = {key: f"{100 * n / (args.draws * 3):.0f}%" for key, n in cut.items()}
        print(f"| {step:,} | {seeds[0]:.2f} | {seeds[1]:.2f} | {groups[0]:.2f} | {groups[1]:.2f} | "
              f"{share[0, 'top']} / {share[0, 'bottom']} | {share[1, 'top']} / {share[1, 'bottom']} |")  # fmt: skip


if __name__ == "__main__":
    main()
