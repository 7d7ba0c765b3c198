"""`python -m dqn.cli.compare` (or `dqn-compare`): print a sweep's report and (re)write its files.

python -m dqn.cli.compare                    # the most recent sweep in the experiment
python -m dqn.cli.compare --sweep-id <id>       # the id the sweep printed, its folder's name or its folder
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException

from dqn.config import first_line
from dqn.report.sweep_report import ReportError, find_sweep, render, sweep_dir, write_report
from dqn.sweep_protocol import read_sweep
from dqn.tracking.store import TrackingUnavailable, existing_store, experiment_name, tracking_uri


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = existing_store(args.tracking_uri or tracking_uri(None, Path.cwd()))
        parent = find_sweep(client, args.experiment or experiment_name(None), sweep_id_of(args.sweep_id))
        report = write_report(client, parent.info.run_id, args.out or sweep_dir(parent))
    except (ReportError, TrackingUnavailable, MlflowException, OSError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    print(render(report))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dqn.cli.compare", description="Report a sweep from its runs in MLflow."
    )
    parser.add_argument(
        "--sweep-id",
        help="the sweep to report: its id, which is its folder's name, or its folder (default: the most recent sweep "
        "in the experiment)",
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)")
    parser.add_argument(
        "--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else dqn-lunar-lander)"
    )
    parser.add_argument("--out", type=Path, help="folder for the report files (default: the sweep's own folder)")
    return parser.parse_args(argv)


def sweep_id_of(given: str | None) -> str | None:
    """The id `--sweep-id` names: a sweep's folder, as the console printed it, holds its id (an Optuna search's
    is its study's); anything else is the id itself, which is the sweep folder's name."""
    if given is None:
        return None
    record = read_sweep(Path(given)) if Path(given).is_dir() else None
    return record["sweep_id"] if record is not None else Path(given).name


if __name__ == "__main__":
    sys.exit(main())
