"""Does a code change keep training bit-identical? Record the default config's histories, or compare two records.

    python benchmarks/same_history.py record before.json [--steps 20000 --seed 0]
    python benchmarks/same_history.py compare before.json after.json

Records what `learn` logs for episode_return, loss and every evaluation metric (not timings), exactly as
floats; compare prints the first difference, or that the histories are identical.
"""

from __future__ import annotations

import argparse
import json
import sys

from dqn.config import TrainConfig
from dqn.learn import learn

KEYS = ("episode_return", "episode_length", "loss", "epsilon", "eval_return_mean", "best_eval_return_mean")


def record(path: str, steps: int, seed: int) -> None:
    history: dict[str, list[list[float]]] = {key: [] for key in KEYS}

    def log(metrics: dict[str, float], step: int) -> None:
        for key in KEYS:
            if key in metrics:
                history[key].append([step, metrics[key]])

    learn(TrainConfig(seed=seed, total_steps=steps, checkpoint_every=0, final_eval_episodes=0), log)
    with open(path, "w") as file:
        json.dump(history, file)
    print(f"{path}: " + ", ".join(f"{key} {len(values)}" for key, values in history.items()))


def compare(first: str, second: str) -> int:
    with open(first) as a, open(second) as b:
        before, after = json.load(a), json.load(b)
    for key in KEYS:
        if before[key] != after[key]:
            at = next((i for i, (x, y) in enumerate(zip(before[key], after[key], strict=False)) if x != y), None)
            print(f"{key} differs (lengths {len(before[key])} and {len(after[key])}, first difference at entry {at})")
            return 1
    print("identical: " + ", ".join(f"{key} {len(before[key])} values" for key in KEYS))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["record", "compare"])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "record":
        record(args.files[0], args.steps, args.seed)
    else:
        sys.exit(compare(*args.files[:2]))
