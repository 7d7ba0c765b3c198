"""Real services for the tests: a SLURM cluster, PostgreSQL, and an MLflow server that can be stopped and
brought back on its port.

A fixture uses a service that already runs; it starts one with the repo's script only when
DQN_START_SERVICES=1 (and stops what it started). Otherwise the test is skipped with one line,
except under CI (CI=true), where a missing service fails the test: CI must run them all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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


def script(name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=timeout, check=False)


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


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the shell's MLflow settings, plus `extra`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | extra


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float, what: str, every: float = 0.2):
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class MlflowServer:
    """`mlflow server` on 127.0.0.1 (SQLite under `home` unless `backend` says otherwise), serving artifacts
    from `home`, in a process group of its own so that `stop` takes its workers too."""

    def __init__(self, home: Path, port: int | None = None, backend: str | None = None) -> None:
        self.home, self.port = home, port or free_port()
        self.backend = backend or f"sqlite:///{home / 'mlflow.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = home / "server.log"
        home.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 180) -> MlflowServer:
        # The backend URI may hold a password: through the environment, not the command line.
        # GenAI job runners (7 extra processes, ~240 MB each) are of no use to these tests.
        env = clean_env(MLFLOW_BACKEND_STORE_URI=self.backend, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--serve-artifacts", "--artifacts-destination", str(self.home / "artifacts")],
                cwd=self.home, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server on port {self.port} did not start: {self.log.read_text()[-1500:]}")
            time.sleep(0.5)
        return self

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.uri}/health", timeout=2).ok
        except requests.RequestException:  # refused, reset, or a read timeout while it starts
            return False

    def stop(self) -> None:
        """Kill the whole server (its workers too), as a crash or a lost node would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        self.process = None
        wait_until(lambda: not self.healthy(), 30, "the server to go away")


@pytest.fixture(scope="session")
def postgres_server(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on the PostgreSQL store, serving artifacts from a temporary folder."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), backend=postgres_uri).start()
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def optuna_postgres(postgres_uri: str) -> str:
    """The URI of the same cluster's `optuna` database, for search studies; `start` on a running cluster
    only adds the databases it lacks (one started by an older script has no `optuna`)."""
    done = script("postgres-local.sh", "start", "optuna")
    if done.returncode != 0:
        pytest.fail(f"postgres-local.sh start optuna failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    return done.stdout.strip()
