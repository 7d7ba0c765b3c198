"""Which Optuna storage can two search commands share? The evidence behind dqn.search's choice.

Starts `--processes` processes at once, each asking and telling `--trials` trials of one study, on
MLflow's Optuna storage (mlflow.optuna.MlflowStorage, over the embedded SQLite MLflow store) and on
Optuna's RDB storage (its own SQLite file), and prints per storage the trials asked, the trials the
study holds, how many numbers repeat, and the seconds per trial. About a minute.

    .venv/bin/python benchmarks/optuna_storage.py [--processes 2] [--trials 8]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

STORAGES = ("mlflow", "rdb")


def storage(kind: str, folder: Path):
    import optuna

    if kind == "rdb":
        return optuna.storages.RDBStorage(
            f"sqlite:///{folder / 'optuna.db'}", engine_kwargs={"connect_args": {"timeout": 60}}
        )
    import mlflow
    from mlflow.optuna.storage import MlflowStorage

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    return MlflowStorage(experiment_id=mlflow.set_experiment("storage").experiment_id)


def worker(kind: str, folder: Path, trials: int) -> None:
    """One command's share: ask, suggest, tell, `trials` times."""
    import optuna

    study = optuna.create_study(study_name="shared", storage=storage(kind, folder), load_if_exists=True)
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))


def measure(kind: str, processes: int, trials: int) -> dict:
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        worker(kind, folder, 1)  # the study and its tables exist before the race
        started = time.perf_counter()
        running = [
            subprocess.Popen([sys.executable, __file__, "--worker", kind, str(folder), str(trials)])
            for _ in range(processes)
        ]
        for process in running:
            process.wait()
        seconds = time.perf_counter() - started
        numbers = [t.number for t in optuna.load_study(study_name="shared", storage=storage(kind, folder)).trials]
    repeated = sum(count - 1 for count in Counter(numbers).values() if count > 1)
    asked = 1 + processes * trials
    return {"asked": asked, "held": len(numbers), "repeated": repeated, "s_per_trial": seconds / (asked - 1)}


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        quiet()
        worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    quiet()
    print(f"{args.processes} processes x {args.trials} trials at once, after one trial alone")
    print("| storage | trials asked | trials held | repeated numbers | s per trial |")
    print("|---|---:|---:|---:|---:|")
    for kind in STORAGES:
        r = measure(kind, args.processes, args.trials)
        print(f"| {kind} | {r['asked']} | {r['held']} | {r['repeated']} | {r['s_per_trial']:.2f} |")


def quiet() -> None:
    import optuna

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
