"""Our default DQN against Stable-Baselines3's DQN with RL-Zoo's LunarLander hyperparameters.

Both train on LunarLander-v3 under the same protocol: one torch thread per process, seeds in
parallel worker processes, greedy evaluation on a separate env with the standard 1000-step limit
every `eval_every` steps (training seconds exclude evaluation), a final greedy evaluation of
`final_episodes` episodes of both the last weights and the weights of the best in-training
evaluation (what `keep_best` delivers; RL-Zoo's best_model), the same rule for both systems.
Prints one table and writes the raw rows to runs/bench/<time>.csv.

    python benchmarks/bench.py --quick        # a smoke check in a few minutes
    python benchmarks/bench.py                # the evidence: 10 of ours, 5 of SB3, 100k steps
"""

from __future__ import annotations

import argparse
import copy
import csv
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from dqn.config import TrainConfig, validate
from dqn.environment import make_env
from dqn.learn import EVAL_SEED_OFFSET, learn
from dqn.policy import evaluate_episodes

SOLVED = 200.0
FINAL_SEED = 2_000_000  # final evaluation starts differ from the in-training ones


@dataclass
class Result:
    system: str
    seed: int
    steps: int
    train_seconds: float
    last_mean: float
    best_mean: float
    steps_to_200: int | None
    seconds_to_200: float | None
    peak_rss_mb: float
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # (step, mean, train seconds)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.train_seconds


def first_solved(evals: list[tuple[int, float, float]]) -> tuple[int | None, float | None]:
    for step, mean, seconds in evals:
        if mean >= SOLVED:
            return step, seconds
    return None, None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def final_mean(policy, episodes: int, seed: int) -> float:
    env = make_env("LunarLander-v3")
    scores = [e.score for e in evaluate_episodes(policy, env, episodes, FINAL_SEED + seed)]
    env.close()
    return float(np.mean(scores))


def our_config(overrides: list[str], **fixed) -> TrainConfig:
    """The default config with dotted `key=value` overrides (typed and checked by OmegaConf), then `fixed`."""
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.from_dotlist(overrides), fixed)
    cfg = OmegaConf.to_object(merged)
    validate(cfg)
    return cfg


def run_ours(
    seed: int, steps: int, eval_every: int, eval_episodes: int, final_episodes: int, overrides: list[str]
) -> Result:
    torch.set_num_threads(1)
    cfg = our_config(overrides, seed=seed, total_steps=steps, eval_every=eval_every, eval_episodes=eval_episodes,
                     checkpoint_every=0, checkpoint_buffer=False, keep_best=False,
                     final_eval_episodes=0)  # fmt: skip  # final_mean, below, scores both weights alike
    evals: dict[int, dict[str, float]] = {}
    saved: list[dict] = []  # the final checkpoint holds a copy of the best evaluation's weights; with
    # keep_best=False the returned network keeps the last ones (the checkpoint's "q" aliases it)

    def log(metrics: dict[str, float], step: int) -> None:
        if "eval_return_mean" in metrics:
            evals[step] = metrics

    start = time.perf_counter()
    q = learn(cfg, log, saved.append)
    rows = [(s, m["eval_return_mean"], m["train_seconds"]) for s, m in sorted(evals.items())]
    seconds = rows[-1][2] if rows else time.perf_counter() - start
    last = final_mean(q, final_episodes, seed)
    if saved[-1]["best"]["q"] is not None:  # without evaluations the best weights are the last ones
        q.network.load_state_dict(saved[-1]["best"]["q"])
    name = " ".join(["dqn (ours)", *overrides])
    return Result(name, seed, steps, seconds, last, final_mean(q, final_episodes, seed), *first_solved(rows),
                  peak_rss_mb(), rows)  # fmt: skip


class GreedySB3:
    """SB3's policy behind our estimator's `greedy_action`, so both are evaluated by the same code."""

    def __init__(self, model) -> None:
        self.model = model

    def greedy_action(self, observation) -> int:
        return int(self.model.predict(observation, deterministic=True)[0])


def run_sb3(seed: int, steps: int, eval_every: int, eval_episodes: int, final_episodes: int) -> Result:
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    eval_env = make_env("LunarLander-v3")
    evals: list[tuple[int, float, float]] = []
    clock = {"start": time.perf_counter(), "paused": 0.0}
    best: dict = {"score": -np.inf, "weights": None}

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                since = time.perf_counter()
                scores = [e.score for e in evaluate_episodes(GreedySB3(self.model), eval_env, eval_episodes,
                                                             seed + EVAL_SEED_OFFSET)]  # fmt: skip
                clock["paused"] += time.perf_counter() - since
                evals.append((self.num_timesteps, float(np.mean(scores)), since - clock["start"] - clock["paused"]))
                if evals[-1][1] >= best["score"]:  # our keep_best rule
                    best.update(score=evals[-1][1], weights=copy.deepcopy(self.model.policy.state_dict()))
            return True

    # RL-Zoo's hyperparams/dqn.yml for LunarLander (v2, unchanged for v3)
    model = DQN(
        "MlpPolicy", make_env("LunarLander-v3"), learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
        learning_starts=0, gamma=0.99, target_update_interval=250, train_freq=4, gradient_steps=-1,
        exploration_fraction=0.12, exploration_final_eps=0.1, policy_kwargs={"net_arch": [256, 256]},
        seed=seed, device="cpu", verbose=0,
    )  # fmt: skip
    clock["start"] = time.perf_counter()
    model.learn(total_timesteps=steps, callback=Evaluate())
    seconds = time.perf_counter() - clock["start"] - clock["paused"]
    last = final_mean(GreedySB3(model), final_episodes, seed)
    model.policy.load_state_dict(best["weights"])
    return Result("sb3 (rl-zoo)", seed, steps, seconds, last, final_mean(GreedySB3(model), final_episodes, seed),
                  *first_solved(evals), peak_rss_mb(), evals)  # fmt: skip


def run_job(job: tuple) -> Result:
    system, *args = job
    return (run_ours if system == "ours" else run_sb3)(*args)


def tracking_overhead(steps: int) -> tuple[float, float, float]:
    """One seed without tracking and with MLflow (SQLite): wall seconds of each, and the seconds spent
    inside the tracking calls (the direct measure; the wall difference also carries machine noise)."""
    from dqn.tracking import recorder, store

    torch.set_num_threads(1)
    learn(TrainConfig(total_steps=3_000, learning_starts=1_000, eval_episodes=0, final_eval_episodes=0))  # warm-up
    cfg = TrainConfig(seed=0, total_steps=steps, eval_episodes=0, final_eval_episodes=0, checkpoint_every=0)
    start = time.perf_counter()
    learn(cfg)
    off = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        client, experiment_id = store.open_experiment(store.default_store(Path(tmp)), "bench")
        recorder = recorder.Recorder(client, client.create_run(experiment_id).info.run_id, Path(tmp) / "job")
        inside = 0.0

        def log(metrics: dict[str, float], step: int) -> None:
            nonlocal inside
            since = time.perf_counter()
            recorder.log(metrics, step)
            inside += time.perf_counter() - since

        start = time.perf_counter()
        with recorder.ended(recorder):
            learn(cfg, log)
            since = time.perf_counter()
        on = time.perf_counter() - start
        inside += time.perf_counter() - since  # the final flush and status
    return off, on, inside


def parallel_scaling(steps: int) -> float:
    """Throughput of 2 of our jobs at once over one alone (on 2 cores, 2.0 is perfect)."""
    job = ("ours", 0, steps, steps, 0, 1, [])
    with mp.get_context("spawn").Pool(1) as pool:
        alone = pool.map(run_job, [job])[0].steps_per_second
    with mp.get_context("spawn").Pool(2) as pool:
        together = sum(r.steps_per_second for r in pool.map(run_job, [job, job]))
    return together / alone


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: list[Result]) -> list[dict]:
    """One row per system: the medians and counts the issue asks for."""
    rows = []
    for system in dict.fromkeys(r.system for r in results):
        mine = sorted((r for r in results if r.system == system), key=lambda r: r.seed)
        rows.append({
            "system": system,
            "seeds": len(mine),
            "steps": mine[0].steps,
            "steps_per_second": median([r.steps_per_second for r in mine]),
            "median_seconds_to_200": median([r.seconds_to_200 for r in mine if r.seconds_to_200 is not None]),
            "median_steps_to_200": median([r.steps_to_200 for r in mine if r.steps_to_200 is not None]),
            "reached_200": sum(r.steps_to_200 is not None for r in mine),
            "last_means": [round(r.last_mean) for r in mine],
            "success_last": sum(r.last_mean >= SOLVED for r in mine),
            "best_means": [round(r.best_mean) for r in mine],
            "success_best": sum(r.best_mean >= SOLVED for r in mine),
            "peak_rss_mb": max(r.peak_rss_mb for r in mine),
        })  # fmt: skip
    return rows


def ratio(ours: float | None, peer: float | None) -> str:
    return f"{ours / peer:.2f}x" if ours and peer else "n/a"


def print_table(rows: list[dict]) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:,.0f}" if isinstance(v, float) else str(v)

    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(fmt(row[k]) for k in keys) + " |")
    if len(rows) == 2:
        ours, peer = rows
        print(f"\nenv steps/s, ours / SB3: {ratio(ours['steps_per_second'], peer['steps_per_second'])}")
        print(f"median seconds to first eval >= 200, SB3 / ours: "
              f"{ratio(peer['median_seconds_to_200'], ours['median_seconds_to_200'])}")  # fmt: skip
        for weights in ("last", "best"):
            print(f"success ({weights} weights, final greedy mean >= 200): ours {ours['success_' + weights]}/"
                  f"{ours['seeds']}, SB3 {peer['success_' + weights]}/{peer['seeds']}")  # fmt: skip


def write_csv(results: list[Result], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*asdict(results[0]).keys(), "steps_per_second"])
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r) | {"steps_per_second": r.steps_per_second})
    return path


def measure_costs(quick: bool) -> None:
    """What tracking costs and how two parallel jobs scale (run alone: both are timings)."""
    off, on, inside = tracking_overhead(10_000 if quick else 30_000)
    print(
        f"\ntracking cost: {inside:.2f} s inside MLflow calls = {100 * inside / on:.2f}% of the tracked run; "
        f"wall {off:.1f} s without tracking, {on:.1f} s with ({100 * (on - off) / off:+.1f}%, incl. noise)"
    )
    print(f"2 jobs in parallel vs 1 alone, total throughput: {parallel_scaling(10_000 if quick else 30_000):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds each, 20k steps: a smoke check")
    parser.add_argument("--seeds", type=int, help="seeds of ours (default 10, quick 2)")
    parser.add_argument("--peer-seeds", type=int, help="seeds of SB3 (default 5, quick 2; 0 skips it)")
    parser.add_argument("--steps", type=int, help="env steps per run (default 100k, quick 20k)")
    parser.add_argument("--workers", type=int, default=mp.cpu_count(), help="parallel processes (default: cores)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override our config (repeatable), e.g. network.hidden_sizes=[64,64]")  # fmt: skip
    parser.add_argument("--costs-only", action="store_true", help="only the tracking cost and parallel scaling")
    args = parser.parse_args()
    quick = args.quick
    if args.costs_only:
        return measure_costs(quick)
    steps = args.steps or (20_000 if quick else 100_000)
    seeds = args.seeds if args.seeds is not None else (2 if quick else 10)
    peer_seeds = args.peer_seeds if args.peer_seeds is not None else (2 if quick else 5)
    default = TrainConfig()  # the full mode evaluates both systems as our default config evaluates itself
    eval_every, eval_episodes, final_episodes = (
        (5_000, 5, 10) if quick else (default.eval_every, default.eval_episodes, 50)
    )

    jobs = [("sb3", s, steps, eval_every, eval_episodes, final_episodes) for s in range(peer_seeds)]
    jobs += [("ours", s, steps, eval_every, eval_episodes, final_episodes, args.set) for s in range(seeds)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:  # fresh RSS per run
        results = pool.map(run_job, jobs, chunksize=1)
    results.sort(key=lambda r: (not r.system.startswith("dqn (ours)"), r.seed))
    print(f"{len(jobs)} runs of {steps:,} steps on {args.workers} processes in {time.perf_counter() - start:.0f} s\n")
    print_table(summarize(results))
    print(f"raw results: {write_csv(results, args.out)}")
    measure_costs(quick)


if __name__ == "__main__":
    main()
