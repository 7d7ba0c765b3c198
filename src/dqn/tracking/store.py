"""Which MLflow store, and who may write to a run: URIs, opening a store in one line or failing in one,
the embedded store's first-open lock, folder locks that tell a live job from a gone one, UI addresses.

While a job runs it holds an exclusive lock on its folder; the kernel drops the lock when the
process dies however it dies, so a RUNNING run whose folder is unlocked has no process behind it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from dqn.config import first_line
from dqn.redaction import redact

log = logging.getLogger("dqn")
# MLflow draws a progress bar for every artifact download (a resume fetches two): noise on the console.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
DEFAULT_EXPERIMENT = "dqn-lunar-lander"
LOCK = ".run.lock"
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
    """{'env': {'id': 'X'}} -> {'env.id': 'X'}: MLflow params are flat (and shown to everyone: passwords masked)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = redact(str(value))
    return flat


def git_commit(cwd: Path) -> str:
    """HEAD's sha, with `-dirty` if the tree has uncommitted changes; `unknown` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=cwd, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def origin_tags(role: str, overrides: list[str], root: Path) -> dict[str, str]:
    """What every run we create says about where it came from: its role (`job` or `sweep`), the command's
    overrides (passwords masked) and the code's commit, ours and MLflow's source tag."""
    commit = git_commit(root)
    return {
        "dqn.role": role,
        "hydra_overrides": redact(" ".join(overrides)),
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
    }


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached, opened or written."""


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
            f"tracking store {redact(uri)!r} cannot be used: {type(error).__name__}: {redact(first_line(error))}"
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
        raise TrackingUnavailable(f"tracking store {redact(uri)} cannot be created: {first_line(error)}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


UI_KIND = ("mlflow.experimentKind", "custom_model_development")
"""The experiment tag MLflow's UI reads to open on the runs table instead of its GenAI overview."""


def ui_address(
    uri: str, experiment_id: str, run_id: str | None = None, host: str = "127.0.0.1", port: int = 5000
) -> str:
    """Where the MLflow UI shows the run (or the experiment): the server itself, or a local UI at `host:port` for
    the embedded store. `workflowType=machine_learning` opens MLflow 3's "Model training" view (runs, metrics)
    instead of its GenAI overview."""
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + "?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/{page}"


def existing_store(uri: str) -> MlflowClient:
    """A client on a store that must exist already (to read a report, to evaluate a run), or one line saying
    why not: a missing SQLite file is a wrong folder, not a store to create."""
    check_reachable(uri)
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise TrackingUnavailable(f"no MLflow store at {redact(uri)} (run from the project folder or pass its URI)")
    return MlflowClient(uri)


def open_experiment(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client for `uri` and the id of `experiment` in it (both created if needed), or one line saying why not."""
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
                f"tracking store {redact(uri)!r} with experiment {experiment[:60]!r} cannot be used: "
                f"{type(error).__name__}: {redact(first_line(error))}"
            ) from None
    return client, experiment_id


class FolderLock:
    """An exclusive lock on a job's folder, held while a process works on its run; the lock file says which
    process (`holder`)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.file: IO[str] | None = (folder / LOCK).open("a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            self.file = None
            raise
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.file.flush()

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def holder(folder: Path) -> str:
    """Which process holds `folder`'s lock, as its lock file says (`pid 123 on node1`)."""
    try:
        return (folder / LOCK).read_text().strip() or "a process"
    except OSError:
        return "a process"


def folder_in_use(folder: Path) -> bool:
    """Whether a live process holds `folder`'s lock."""
    if not (folder / LOCK).exists():
        return False
    try:
        FolderLock(folder).release()
    except BlockingIOError:
        return True
    return False
