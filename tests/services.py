"""Real services for the tests: a SLURM cluster, PostgreSQL and an MLflow server on it.

A fixture uses a service that already runs; it starts one with the repo's script only when
DQN_START_SERVICES=1 (and stops what it started). Otherwise the test is skipped with one line,
except under CI (CI=true), where a missing service fails the test: CI must run them all.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def unavailable(reason: str) -> None:
    """Skip, or fail under CI, for a service that is not there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (under CI the service tests must run: .ci/run starts the services)")
    pytest.skip(f"{reason}; start it with the script or set DQN_START_SERVICES=1")


def may_start() -> bool:
    return os.environ.get("DQN_START_SERVICES") == "1"


def script(name: str, action: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / name), action], capture_output=True, text=True, timeout=timeout, check=False)


def started(name: str) -> subprocess.CompletedProcess:
    done = script(name, "start")
    if done.returncode != 0:
        pytest.fail(f"{name} start failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    return done


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A SLURM cluster that answers `sinfo` and has a partition."""
    if slurm_answers():
        yield
        return
    if not may_start():
        unavailable("no SLURM cluster answers `sinfo`")
    started("slurm-local.sh")
    try:
        yield
    finally:
        script("slurm-local.sh", "stop")


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """The URI of the `mlflow` database of scripts/postgres-local.sh's cluster."""
    if script("postgres-local.sh", "status").returncode == 0:
        yield script("postgres-local.sh", "uri").stdout.strip()
        return
    if not may_start():
        unavailable("PostgreSQL (scripts/postgres-local.sh) is not running")
    uri = started("postgres-local.sh").stdout.strip()
    try:
        yield uri
    finally:
        script("postgres-local.sh", "stop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(uri: str, server: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Poll /health until it answers OK; fail with the server's last words if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited ({server.returncode}): {log.read_text()[-1500:]}")
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                return
        except requests.RequestException:  # refused while starting, or a read timeout while it is busy
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy within {timeout_s:.0f} s: {log.read_text()[-1500:]}")


@pytest.fixture(scope="session")
def postgres_server(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on the PostgreSQL store, serving artifacts from a temporary folder."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # The URI holds the database password: through the environment, not the command line.
    # GenAI job runners (7 extra processes, ~240 MB each) are of no use to these tests.
    env |= {"MLFLOW_BACKEND_STORE_URI": postgres_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = home / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--serve-artifacts", "--artifacts-destination", str(home / "artifacts")],
            cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(uri, server, log)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
