"""Recording one job's run: metrics that are never lost, artifacts after them, a run that always ends.

A single `log_metric` on the SQLite store costs several milliseconds, more than a DQN update,
and a tracking server can go away for minutes. So every metric the job accepts is first appended
to a journal in the job's folder (`metrics.jsonl`), and a background thread sends the journal's
unsent tail in batches, then any artifacts, in that order: the store is never ahead of the journal,
and training never waits on the network. What the store has not acknowledged stays in the
journal, and a later `resume=` of the run sends it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from dqn.config import first_line
from dqn.redaction import redact
from dqn.stops import StopRequested
from dqn.tracking.store import TrackingUnavailable

log = logging.getLogger("dqn")
JOURNAL = "metrics.jsonl"
SENT = "metrics.sent"
HEARTBEAT_TAG = "dqn.heartbeat"
"""Unix time of the last delivery: how `resume=` tells, from another machine, that a run's job is gone."""


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
            self.tags[key] = redact(value)  # error messages may quote a URL
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
    except (KeyboardInterrupt, StopRequested) as error:  # a second Ctrl-C, or a requested stop
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
