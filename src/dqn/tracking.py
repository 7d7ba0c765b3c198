"""MLflow for one training job: which store, one run that always ends, metrics in batches.

A single `log_metric` on the SQLite store costs several milliseconds, more than a
DQN update, so metrics are buffered and written with `log_batch` every few seconds.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

DEFAULT_EXPERIMENT = "dqn-lunar-lander"


def default_store(root: Path) -> str:
    """The embedded store: SQLite at <root>/mlruns/mlflow.db (absolute, so any job cwd agrees)."""
    return f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def tracking_uri(configured: str | None, root: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the embedded store under `root`."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or default_store(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def experiment_name(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, creating it if needed; safe when parallel jobs race to create it."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return client.get_experiment_by_name(name).experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'env': {'id': 'X'}} -> {'env.id': 'X'}: MLflow params are flat."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def git_commit(cwd: Path) -> str:
    """HEAD's sha, with `-dirty` if the tree has uncommitted changes; `unknown` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=cwd, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or opened."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after training, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as error:
        raise TrackingUnavailable(
            f"MLFLOW_TRACKING_URI={uri!r} is unreachable ({type(error).__name__}): allowed a running MLflow "
            "server, a sqlite:/// URI, or unset for the embedded store"
        ) from None


def open_store(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client for `uri` and the id of `experiment` in it (created if needed)."""
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    artifacts = None
    if uri.startswith("sqlite:///"):  # keep the embedded store's artifacts beside its database
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return client, get_or_create_experiment(client, experiment, artifacts)


class Recorder:
    """Buffers metrics and writes them in batches; keeps every value for the learning curve.

    With `client=None` it only keeps the history (tracking switched off). A value at or
    before a step already logged for its key is dropped, so a resumed run that replays
    steps after its checkpoint adds no duplicates.
    """

    def __init__(self, client: MlflowClient | None, run_id: str | None, flush_seconds: float = 5.0) -> None:
        self.client, self.run_id, self.flush_seconds = client, run_id, flush_seconds
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.pending: list[Metric] = []
        self.last_flush = time.monotonic()

    @classmethod
    def reopen(cls, client: MlflowClient, run_id: str) -> Recorder:
        """A recorder continuing an existing run, its metric history loaded."""
        recorder = cls(client, run_id)
        for key in client.get_run(run_id).data.metrics:
            metrics = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            recorder.history[key] = [(m.step, m.value) for m in metrics]
        client.update_run(run_id, status="RUNNING")
        return recorder

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        for key, value in metrics.items():
            history = self.history[key]
            if history and step <= history[-1][0]:
                continue
            history.append((step, float(value)))
            self.pending.append(Metric(key, float(value), timestamp, step))
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        pending, self.pending = self.pending, []
        if self.client is None:
            return
        for i in range(0, len(pending), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i : i + MAX_METRICS_PER_BATCH])

    def log_params(self, params: Mapping[str, str]) -> None:
        if self.client is None:
            return
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tag(self, key: str, value: str) -> None:
        if self.client is not None:
            self.client.set_tag(self.run_id, key, value)


@contextmanager
def ended(recorder: Recorder) -> Iterator[Recorder]:
    """End the recorder's run FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED, whatever happens inside.

    Buffered metrics are written before the status, so an interrupted run keeps all it logged.
    """
    if recorder.client is None:
        yield recorder
        return
    status = RunStatus.FAILED
    try:
        yield recorder
        status = RunStatus.FINISHED
    except KeyboardInterrupt as error:
        status = RunStatus.KILLED
        recorder.set_tag("end_reason", str(error) or "interrupted")
        raise
    except BaseException as error:
        recorder.set_tag("end_reason", f"{type(error).__name__}: {error}"[:5000])
        raise
    finally:
        try:
            recorder.flush()
        finally:
            recorder.client.set_terminated(recorder.run_id, RunStatus.to_string(status))
