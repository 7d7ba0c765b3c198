"""MLflow for one training job: which store, one run that always ends, and metrics that are never lost.

A single `log_metric` on the SQLite store costs several milliseconds, more than a DQN update,
and a tracking server can go away for minutes. So every metric the job accepts is first appended
to a journal in the job's folder (`metrics.jsonl`), and a background thread sends the journal's
unsent tail in batches, then any artifacts, in that order: the store is never ahead of the journal,
and training never waits on the network. What the store has not acknowledged stays in the
journal, and a later `resume=` of the run sends it.

While the job runs it holds an exclusive lock on its folder; the kernel drops the lock when the
process dies however it dies, so a RUNNING run whose folder is unlocked has no process behind it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

log = logging.getLogger("dqn")
# MLflow draws a progress bar for every artifact download (a resume fetches two): noise on the console.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
DEFAULT_EXPERIMENT = "dqn-lunar-lander"
JOURNAL = "metrics.jsonl"
SENT = "metrics.sent"
LOCK = ".run.lock"
HEARTBEAT_TAG = "dqn.heartbeat"
LEASE_SECONDS = 600
"""A RUNNING run whose folder cannot be seen from here is taken as abandoned once its heartbeat is this old."""


def default_store(root: Path) -> str:
    """The embedded store: SQLite at <root>/mlruns/mlflow.db (absolute, so any job cwd agrees)."""
    return f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def tracking_uri(configured: str | None, root: Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else the embedded store under `root`."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_store(root)


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
    """The tracking store cannot be reached, opened or written."""


def first_line(error: BaseException) -> str:
    """MLflow's and SQLAlchemy's messages span many lines (SQL, hints); a user gets the first."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


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


DATABASES = ("postgresql", "mysql", "mssql")


def check_database(uri: str, timeout: int = 5) -> None:
    """Fail in seconds with one line when a database URI cannot be connected: MLflow itself retries for
    about two minutes, printing every attempt."""
    if not uri.startswith(DATABASES):
        return
    import sqlalchemy  # MLflow's own dependency; only database URIs need it here

    engine = None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": timeout})
        with engine.connect():
            pass
    except Exception as error:  # a missing driver, a refused connection, bad credentials: all one line
        raise TrackingUnavailable(
            f"tracking store {uri!r} cannot be used: {type(error).__name__}: {first_line(error)}"
        ) from None
    finally:
        if engine is not None:
            engine.dispose()


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise the first opening of an embedded store: two processes creating its tables at once
    collide (`duplicate column name`, alembic errors)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (path.parent / f"{path.name}.lock").open("a")
    except OSError as error:
        raise TrackingUnavailable(f"tracking store {uri} cannot be created: {first_line(error)}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


UI_KIND = ("mlflow.experimentKind", "custom_model_development")
"""The experiment tag MLflow's UI reads to open on the runs table instead of its GenAI overview."""


def ui_address(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where the MLflow UI shows the run (or the experiment): the server itself, or `make ui` for the
    embedded store."""
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    if uri.startswith(("http://", "https://")):
        return f"view at {uri.rstrip('/')}/{page}"
    return f"view at http://127.0.0.1:5000/{page} after `make ui`"


def open_store(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client for `uri` and the id of `experiment` in it (created if needed), or one line saying why not."""
    check_reachable(uri)
    check_database(uri)
    path = sqlite_path(uri)
    artifacts = (path.parent / "artifacts").as_uri() if path is not None else None  # beside the database
    with store_lock(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment_id = get_or_create_experiment(client, experiment, artifacts)
            if client.get_experiment(experiment_id).tags.get(UI_KIND[0]) != UI_KIND[1]:
                client.set_experiment_tag(experiment_id, *UI_KIND)
        except Exception as error:  # a bad URI fails in MLflow, SQLAlchemy, a driver or the OS: all one line
            raise TrackingUnavailable(
                f"tracking store {uri!r} with experiment {experiment[:60]!r} cannot be used: "
                f"{type(error).__name__}: {first_line(error)}"
            ) from None
    return client, experiment_id


class FolderLock:
    """An exclusive lock on a job's folder, held while a process works on its run."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.file: IO[str] | None = (folder / LOCK).open("a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            self.file = None
            raise

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def folder_in_use(folder: Path) -> bool:
    """Whether a live process holds `folder`'s lock."""
    if not (folder / LOCK).exists():
        return False
    try:
        FolderLock(folder).release()
    except BlockingIOError:
        return True
    return False


class Journal:
    """The job's metrics on disk, one JSON line each, and how far the store has acknowledged them."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.sent_path = folder / JOURNAL, folder / SENT
        self.sent = int(self.sent_path.read_text() or 0) if self.sent_path.exists() else 0
        self.lock = threading.Lock()

    def append(self, metrics: list[Metric]) -> None:
        lines = "".join(json.dumps([m.key, m.value, m.timestamp, m.step]) + "\n" for m in metrics)
        with self.lock, self.path.open("a") as file:
            file.write(lines)

    def unsent(self, limit: int = MAX_METRICS_PER_BATCH) -> tuple[list[Metric], int]:
        """Up to `limit` metrics after the acknowledged ones, and the offset just after them."""
        with self.lock:
            if not self.path.exists():
                return [], self.sent
            with self.path.open("rb") as file:
                file.seek(self.sent)
                metrics, offset = [], self.sent
                for line in file:
                    if len(metrics) == limit or not line.endswith(b"\n"):
                        break
                    key, value, timestamp, step = json.loads(line)
                    metrics.append(Metric(key, float(value), int(timestamp), int(step)))
                    offset += len(line)
        return metrics, offset

    def acknowledge(self, offset: int) -> None:
        temporary = self.sent_path.with_suffix(".tmp")
        temporary.write_text(str(offset))
        os.replace(temporary, self.sent_path)
        self.sent = offset

    def pending(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > self.sent


def send_journal(client: MlflowClient, run_id: str, journal: Journal, tags: list[RunTag] = ()) -> None:
    """Send the journal's unsent metrics (with `tags` in the first batch); raises on the first failure,
    leaving the rest unsent. The store ignores exact repeats, so a batch sent twice is harmless."""
    tags = list(tags)
    while True:
        metrics, offset = journal.unsent()
        if not metrics and not tags:
            return
        client.log_batch(run_id, metrics=metrics, tags=tags)
        journal.acknowledge(offset)
        tags = []
        if not metrics:
            return


class Recorder:
    """Accepts metrics, keeps every value for the learning curve, and has them (and artifacts and tags)
    delivered to the run in the background, in the order they came.

    With `client=None` it only keeps the history (tracking switched off). A value at or before a
    step already logged for its key is dropped, so a resumed run that replays steps after its
    checkpoint adds no duplicates.
    """

    def __init__(
        self, client: MlflowClient | None, run_id: str | None, folder: Path | None = None, flush_seconds: float = 5.0
    ) -> None:
        self.client, self.run_id, self.flush_seconds = client, run_id, flush_seconds
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.pending: list[Metric] = []
        self.last_flush = time.monotonic()
        if client is None:
            return
        if folder is None:
            raise ValueError("a tracked Recorder needs the job's folder for its journal")
        self.journal = Journal(folder)
        self.uploads: dict[tuple[str, str | None], None] = {}  # (path, artifact_path), in order, repeats merged
        self.tags: dict[str, str] = {}
        self.failing_since: float | None = None
        self.state = threading.Condition()
        self.closing = False
        self.wanted = False
        self.thread = threading.Thread(target=self._deliver_forever, name="mlflow-recorder", daemon=True)
        self.thread.start()

    def load_history(self) -> None:
        """Continue an existing run: read its metric history, so replayed steps are not logged twice."""
        for key in self.client.get_run(self.run_id).data.metrics:
            metrics = sorted(self.client.get_metric_history(self.run_id, key), key=lambda m: m.step)
            self.history[key] = [(m.step, m.value) for m in metrics]

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
        """Write accepted metrics to the journal (on disk when this returns) and wake the sender."""
        self.last_flush = time.monotonic()
        pending, self.pending = self.pending, []
        if self.client is None:
            return
        if pending:
            self.journal.append(pending)
        self._wake()

    def log_params(self, params: Mapping[str, str]) -> None:
        """Params are written at once: they come before any training, when the store must be there."""
        if self.client is None:
            return
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload `path` after every metric accepted so far (the file is read when it is sent)."""
        if self.client is None:
            return
        self.flush()
        with self.state:
            self.uploads.pop((str(path), artifact_path), None)
            self.uploads[(str(path), artifact_path)] = None
        self._wake()

    def set_tag(self, key: str, value: str) -> None:
        if self.client is None:
            return
        with self.state:
            self.tags[key] = value
        self._wake()

    def close(self, status: str | None = None) -> None:
        """Deliver everything, then end the run with `status` (None leaves it RUNNING).

        Raises TrackingUnavailable, with what is kept where, if the store does not take it.
        """
        if self.client is None:
            return
        self.flush()
        with self.state:
            self.closing = True
            self.state.notify()
        self.thread.join()
        try:
            self._deliver()
            if status is not None:
                self.client.set_terminated(self.run_id, status)
        except Exception as error:
            raise TrackingUnavailable(
                f"the tracking store did not take the end of run {self.run_id} ({type(error).__name__}: "
                f"{first_line(error)}); its metrics are kept in {self.journal.path}: once the store is back, "
                f"`python -m dqn.train resume={self.run_id}` sends them and finishes the run"
            ) from None

    def _wake(self) -> None:
        with self.state:
            self.wanted = True
            self.state.notify()

    def _deliver_forever(self) -> None:
        while True:
            with self.state:
                self.state.wait_for(lambda: self.wanted or self.closing)
                self.wanted = False
                if self.closing:
                    return
            if self.failing_since is not None and time.monotonic() - self.failing_since < self.flush_seconds:
                continue  # the store failed a moment ago: let the journal grow instead of retrying on every flush
            try:
                self._deliver()
            except Exception as error:  # the store is away: everything stays queued and is retried
                if self.failing_since is None:
                    log.warning("tracking store unavailable (%s); kept in %s", first_line(error), self.journal.path)
                self.failing_since = time.monotonic()
            else:
                if self.failing_since is not None:
                    log.info("tracking store back: the metrics kept meanwhile are sent")
                self.failing_since = None

    def _deliver(self) -> None:
        """Metrics first, then artifacts and tags: an uploaded checkpoint is never ahead of the metrics."""
        with self.state:
            tags = [RunTag(k, v) for k, v in self.tags.items()] + [RunTag(HEARTBEAT_TAG, str(int(time.time())))]
            self.tags = {}
        try:
            send_journal(self.client, self.run_id, self.journal, tags)
        except Exception:
            with self.state:
                self.tags = {t.key: t.value for t in tags if t.key != HEARTBEAT_TAG} | self.tags
            raise
        while True:
            with self.state:
                if not self.uploads:
                    return
                path, artifact_path = next(iter(self.uploads))
            self.client.log_artifact(self.run_id, path, artifact_path)
            with self.state:
                if next(iter(self.uploads), None) == (path, artifact_path):
                    del self.uploads[(path, artifact_path)]


@contextmanager
def ended(recorder: Recorder, signalled: Callable[[], bool] = lambda: False) -> Iterator[Recorder]:
    """End the recorder's run FINISHED, KILLED (Ctrl-C, SIGTERM) or FAILED, whatever happens inside.

    An error after a stop signal counts as KILLED too: a second Ctrl-C inside a library (a model
    export) may come out as that library's own exception. Everything recorded is delivered before
    the status, so an interrupted run keeps all it logged.
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
        if signalled():
            status = RunStatus.KILLED
        recorder.set_tag("end_reason", f"{type(error).__name__}: {error}"[:5000])
        raise
    finally:
        recorder.close(RunStatus.to_string(status))
