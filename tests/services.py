"""Real processes for the tests: an `mlflow server` that can be stopped and brought back on its port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


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
    """`mlflow server` on 127.0.0.1 with a SQLite backend under `home`, in a process group of its own."""

    def __init__(self, home: Path, port: int | None = None, backend: str | None = None) -> None:
        self.home, self.port = home, port or free_port()
        self.backend = backend or f"sqlite:///{home / 'mlflow.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        home.mkdir(parents=True, exist_ok=True)

    def start(self) -> MlflowServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", self.backend, "--artifacts-destination", str(self.home / "artifacts"),
             "--workers", "1"],
            cwd=self.home, env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # no GenAI job workers
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self.healthy, 120, f"mlflow server on port {self.port}", every=0.5)
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
