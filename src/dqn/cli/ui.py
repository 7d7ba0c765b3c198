"""`python -m dqn.cli.ui` (or `dqn-ui`): the MLflow UI on this project's store, with the address that opens
our experiment's runs (MLflow 3 otherwise lands on its GenAI overview). For an installed package, no Makefile.

    python -m dqn.cli.ui                          # the embedded store of this folder, at 127.0.0.1:5000
    python -m dqn.cli.ui --port 5001 --store sqlite:////path/to/mlruns/mlflow.db
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dqn.tracking.store import TrackingUnavailable, experiment_name, open_experiment, tracking_uri, ui_address

QUIET = "ignore:starlette:UserWarning"
"""Starlette's deprecation warnings (`starlette.middleware.wsgi is deprecated ...`, a UserWarning subclass that
`-W` cannot name before Starlette is imported), printed by every request worker about MLflow's own imports: noise
for a person who wants the UI. The filter goes into the server's processes only (their PYTHONWARNINGS)."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uri = args.store or tracking_uri(None, Path.cwd())
    name = experiment_name(args.experiment)
    try:
        _, experiment_id = open_experiment(uri, name)  # tags the experiment so the UI's home opens it on its runs
    except TrackingUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    address = ui_address(uri, experiment_id, host=args.host, port=args.port)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking server is the UI: experiment {name}'s runs at {address}")
        return 0
    print(f"MLflow UI on {uri}: experiment {name}'s runs at {address} (Ctrl-C stops it)", flush=True)
    os.execve(sys.executable, server_command(uri, args.host, args.port), server_environment())
    return 0  # not reached: the process is now the server


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dqn.cli.ui",
        description="Serve the MLflow UI on the project's store and print the address of its runs.",
    )
    parser.add_argument("--store", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)")
    parser.add_argument(
        "--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else dqn-lunar-lander)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default: 5000)")
    return parser.parse_args(argv)


def server_command(uri: str, host: str, port: int) -> list[str]:
    """`mlflow ui` with one request worker: a person browsing needs no more, and each costs ~250 MB."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
            "--workers", "1"]  # fmt: skip


def server_environment() -> dict[str, str]:
    """Ours, with Starlette's deprecation warnings off and MLflow's GenAI job runners (not used by training
    runs) not started."""
    quiet = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), QUIET]))
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | os.environ | {"PYTHONWARNINGS": quiet}


if __name__ == "__main__":
    sys.exit(main())
