"""`resume=` of a run whose process is alive, before its first checkpoint, names that process."""

import json
import signal
import socket
import subprocess
import sys

import pytest

from tests.services import clean_env, wait_until
from tests.test_record import JOB, only_folder, start

pytestmark = pytest.mark.slow  # real processes and services: make test-all


def test_resuming_a_live_run_before_its_first_checkpoint_names_its_process(project):
    job = start(project, *JOB, "total_steps=200000", "checkpoint_every=0")  # no checkpoint until the end
    try:
        folder = only_folder(project)
        record = wait_until(lambda: (folder / "run.json").is_file() and (folder / "run.json").read_text(), 180, "run")
        run_id = json.loads(record)["run_id"]
        assert not (folder / "checkpoint.pt").exists()
        done = subprocess.run(
            [sys.executable, "-m", "dqn.train", f"resume={run_id}"],
            cwd=project, env=clean_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        job.send_signal(signal.SIGKILL)
        job.communicate(timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"resume={run_id}: a live process is working on it (pid {job.pid} on {socket.gethostname()}" in line
