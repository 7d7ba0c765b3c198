"""Printed commands work as printed: run from a fresh shell (no activated venv, nothing but PATH), where the
user stands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from dqn.run.commands import command, shortest
from tests.conftest import TINY, runs_of
from tests.services import clean_env, wait_until

VENV = Path(sys.executable).parent.parent
FRESH_SHELL = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}


def test_the_interpreter_is_printed_relative_to_the_working_folder_when_under_it(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "dqn-ui"
    script.write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert shortest(str(script)) == "bin/dqn-ui"
    assert shortest(str(tmp_path.parent / "elsewhere")) == str(tmp_path.parent / "elsewhere")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "dqn-train")])  # run as a console script
    assert command("dqn.cli.ui", "dqn-ui") == "bin/dqn-ui"
    monkeypatch.setattr(sys, "argv", ["-m"])
    assert command("dqn.cli.ui", "dqn-ui") == f"{shortest(sys.executable)} -m dqn.cli.ui"


@pytest.mark.slow
def test_the_printed_resume_command_continues_the_run_in_its_own_folder_from_a_fresh_shell(tmp_path):
    """The project's venv seen from the user's folder as `.venv` (a link): the hint names `.venv/bin/python`."""
    (tmp_path / ".venv").symlink_to(VENV)
    job = subprocess.Popen(
        [".venv/bin/python", "-m", "dqn.train", *TINY, "total_steps=4000", "eval_every=1000", "mlflow.log_model=false"],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    logs = lambda: list(tmp_path.glob("runs/*/*/train.log"))  # noqa: E731
    wait_until(lambda: logs() and "greedy evaluation" in logs()[0].read_text(), 300, "training to start")
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=300)
    assert job.returncode == 130, err[-2000:]
    (folder,) = [log.parent for log in logs()]
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    hint = err.strip().splitlines()[-1]
    assert hint.endswith(f"continue it with: .venv/bin/python -m dqn.train resume={run_id}"), hint

    printed = hint.split("continue it with: ", 1)[1]
    done = subprocess.run(printed, shell=True, cwd=tmp_path, env=FRESH_SHELL, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"run {run_id}: view at http://127.0.0.1:5000/#/experiments/" in done.stdout
    assert "after `.venv/bin/python -m dqn.cli.ui`" in done.stdout  # the UI command, spelt the same way
    (run,) = runs_of(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert run.info.status == "FINISHED" and run.data.tags["resume_count"] == "1"
    assert [log.parent for log in logs()] == [folder] and run.data.tags["output_dir"] == str(folder)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert max(m.step for m in client.get_metric_history(run_id, "eval_return_mean")) == 4000
    assert "resuming run" in (folder / "train.log").read_text()  # one log, continued
