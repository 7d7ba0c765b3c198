"""`python -m dqn.cli.ui` (`dqn-ui`, `make ui`): a real MLflow UI on a store, and the address it prints opens
our experiment's runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import requests

from dqn.tracking.store import open_experiment
from tests.services import clean_env, free_port, wait_until

pytestmark = pytest.mark.slow  # real processes and services: make test-all


def test_the_ui_prints_the_address_of_our_experiments_runs_and_serves_it_quietly(project, store):
    _, experiment_id = open_experiment(store, "dqn-lunar-lander")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dqn.cli.ui", "--port", str(port)],
        cwd=project, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # mlflow ui starts uvicorn workers: stopped together below
    )  # fmt: skip
    try:
        first = server.stdout.readline()
        address = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}?workflowType=machine_learning"
        assert first.strip().endswith(f"runs at {address} (Ctrl-C stops it)"), first
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"

        def answers() -> dict | None:
            try:
                return requests.get(api, timeout=5).json()
            except requests.RequestException:
                return None

        experiment = wait_until(answers, 180, "the UI to answer")["experiment"]
        assert experiment["name"] == "dqn-lunar-lander"
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert not re.search(r"StarletteDeprecationWarning|is deprecated", err), err[-2000:]
