"""Hydra multiruns in MLflow, wired: one parent run per sweep, each job a child run tagged with its group.

The parent is made in the launching process (`on_multirun_start`) and announced to the
jobs through `<sweep dir>/sweep.json`, which every launcher's jobs can read (local
processes, submitit, a cluster's shared filesystem). At the end the parent gets the
comparison report and is ended; if jobs failed, the sweep exits non-zero after that.

A signal to the launching process (Ctrl-C, a scheduler's SIGTERM to the process group) writes
`<sweep dir>/STOP`: running jobs stop at their episode end with a checkpoint, jobs not yet started
are skipped, and the parent ends KILLED once they are all back; a second signal stops at once.
"""

from __future__ import annotations

import atexit
import json
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from omegaconf import DictConfig

from dqn.config import OPTUNA_SWEEPER, RACE_SWEEPER, ConfigError
from dqn.racing.plan import Plan, check_race, race_parent
from dqn.redaction import redact_file, redact_logs
from dqn.report.sweep_report import render, write_report
from dqn.run.commands import resume_command, view_at
from dqn.run.console import number_job_lines
from dqn.run.preflight import LauncherUnavailable, check_launcher
from dqn.search.study import Search, check_search, open_study
from dqn.search.sweeper import study_parent
from dqn.sweep_protocol import STOP_FILE, SWEEP_FILE, read_sweep, swept_keys
from dqn.tracking.store import (
    TrackingUnavailable,
    experiment_name,
    open_experiment,
    origin_tags,
    redact,
    tracking_uri,
)

log = logging.getLogger("dqn")


@contextmanager
def refusing() -> Iterator[None]:
    """Bad input met inside Hydra's multirun ends the command as everywhere here: one `error:` line, exit 2.
    (An exception would reach Hydra, which prints a traceback and exits 1: this layer is the last to see it.)"""
    try:
        yield
    except (ConfigError, LauncherUnavailable, TrackingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def checked_search(config: DictConfig) -> Search | None:
    """The Optuna search `hydra/sweeper=optuna` describes, checked and its study opened (`dqn.search`), or
    None under another sweeper."""
    if config.hydra.sweeper.get("_target_") != OPTUNA_SWEEPER:
        return None
    search = check_search(config, GlobalHydra.instance().config_loader())
    open_study(search)
    return search


def checked_race(config: DictConfig) -> Plan | None:
    """The race `hydra/sweeper=race` describes, checked (`dqn.racing`), or None under another sweeper."""
    if config.hydra.sweeper.get("_target_") != RACE_SWEEPER:
        return None
    return check_race(config, GlobalHydra.instance().config_loader(), list(config.hydra.overrides.task))


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run before the jobs and ends it, with the report, after them."""

    def __init__(self) -> None:
        self.client = self.parent_id = self.sweep_dir = None
        self.stopped_by: str | None = None
        self.study: str | None = None  # an Optuna search's study name
        self.race: Plan | None = None  # a race's plan (dqn.racing)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with refusing():  # bad input is refused in one line, before any run exists
            self.open(config)

    def open(self, config: DictConfig) -> None:
        check_launcher(config.hydra.launcher)  # a sweep the launcher cannot run
        number_job_lines()  # Hydra's `#N` job lines in our `[job N]` numbering
        redact_logs()
        search = checked_search(config)  # an Optuna search (dqn.search)
        self.study = search.study_name if search is not None else None
        self.race = checked_race(config)  # a race (dqn.racing)
        if not config.mlflow.enabled:
            return
        root = Path.cwd()
        uri = tracking_uri(config.mlflow.tracking_uri, root)
        self.client, experiment_id = open_experiment(uri, experiment_name(config.mlflow.experiment_name))
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        existing = read_sweep(self.sweep_dir)
        if existing is not None:
            raise ConfigError(
                f"hydra.sweep.dir={self.sweep_dir} already holds sweep {existing['sweep_id']}: "
                "allowed a folder of its own (the default adds a unique token)"
            )
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        sweep_id = search.study_name if search is not None else self.sweep_dir.name  # one id: the folder's name
        tags = origin_tags("sweep", list(config.hydra.overrides.task), root)
        tags |= {"sweep_id": sweep_id, "sweep_dir": str(self.sweep_dir)}
        if self.race is not None:  # a new race, or the earlier parent of the same race, which this command continues
            run = race_parent(self.client, experiment_id, self.race, tags)
            sweep_id = run.data.tags["sweep_id"]
        elif search is None:
            run = self.client.create_run(experiment_id, run_name=f"sweep {sweep_id}", tags=tags)
        else:  # the study's one parent run, shared by every command that runs it
            run = study_parent(self.client, experiment_id, search, tags)
            sweep_id = run.data.tags["sweep_id"]
        self.parent_id = run.info.run_id
        info = {"sweep_id": sweep_id, "parent_run_id": self.parent_id, "swept": swept_keys(config)}
        (self.sweep_dir / SWEEP_FILE).write_text(json.dumps(info, indent=2))
        atexit.register(self._abandon)  # the sweep died before on_multirun_end
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        log.info("%s %s: parent MLflow run %s", "sweep" if search is None else "search", sweep_id, self.parent_id)

    def _stop(self, signum: int, frame: object) -> None:
        """First signal: let running jobs checkpoint and skip the rest; second: stop at once."""
        name = signal.Signals(signum).name
        if self.stopped_by is not None:
            raise KeyboardInterrupt(f"{name} twice: sweep stopped at once")
        self.stopped_by = name
        (self.sweep_dir / STOP_FILE).write_text(name)
        log.warning("%s: stopping the sweep once running jobs have checkpointed (again to stop at once)", name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id is None:
            return
        try:
            report = write_report(self.client, self.parent_id, self.sweep_dir)
            parent = self.client.get_run(self.parent_id)
            address = view_at(self.client.tracking_uri, parent.info.experiment_id, self.parent_id)
            kind = "Search" if self.study is not None else "Race" if self.race is not None else "Sweep"
            print(f"\n{render(report)}\n{kind} run {self.parent_id}: {address}", flush=True)
        except Exception as error:  # a report problem must not leave the parent RUNNING
            log.warning("sweep report failed: %s", error)
            self.client.set_tag(self.parent_id, "report_error", redact(str(error))[:5000])
        if (self.sweep_dir / "multirun.yaml").is_file():  # Hydra's copy of the command, rewritten every batch
            redact_file(self.sweep_dir / "multirun.yaml")
        failed = self._failed_jobs()
        self.client.set_tag(self.parent_id, "failed_jobs", str(failed))
        if self.stopped_by is not None:
            self.client.set_tag(self.parent_id, "end_reason", f"{self.stopped_by}: the sweep was stopped")
            self._end(RunStatus.KILLED)
            again = (
                f"the same command continues study {self.study}, running its interrupted trials again"
                if self.study
                else "the same command continues the race, running its unfinished jobs again"
                if self.race
                else f"each resumes with {resume_command('<run id>')}"
            )
            print(
                f"{self.stopped_by}: sweep stopped; {failed} job(s) KILLED or FAILED ({again}), jobs not started "
                "were skipped",
                file=sys.stderr,
            )
            raise SystemExit(128 + signal.Signals[self.stopped_by].value)
        self._end(RunStatus.FINISHED)
        if failed:
            raise SystemExit(f"error: {failed} job(s) of the sweep failed; see their MLflow runs' end_reason tag")

    def _children(self) -> list:
        return self.client.search_runs(
            [self.client.get_run(self.parent_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
            max_results=10_000,
        )

    def _own(self, run) -> bool:
        """A job of this command (an Optuna study's parent also holds other commands' jobs)."""
        return Path(run.data.tags.get("output_dir", "/")).is_relative_to(self.sweep_dir)

    def _failed_jobs(self) -> int:
        """This command's jobs that ended FAILED or KILLED, a pruned job (dqn.search.trial) excepted."""
        return sum(
            r.info.status in ("FAILED", "KILLED") and r.data.tags.get("pruned") != "true" and self._own(r)
            for r in self._children()
        )

    def _abandon(self) -> None:
        """End the parent, and jobs a dying launcher killed before they could end themselves, as KILLED."""
        if self.parent_id is None or self.client.get_run(self.parent_id).info.status != "RUNNING":
            return
        for run in self._children():
            if run.info.status == "RUNNING" and self._own(run):
                self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        self._end(RunStatus.KILLED)

    def _end(self, status: int) -> None:
        if self.parent_id is not None and self.client.get_run(self.parent_id).info.status == "RUNNING":
            self.client.set_terminated(self.parent_id, RunStatus.to_string(status))
