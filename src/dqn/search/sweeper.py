"""`hydra/sweeper=optuna`: an Optuna search over the training config, whose trials a lucky seed cannot fool.

Each trial trains `seeds_per_trial` seeds (seed, seed+1, ...: the same seeds in every trial, so trials differ
by their config and not by their luck), one job each, launched in one batch through whichever Hydra launcher
is configured. The trial's value is the mean of the seeds' final scores (`final_eval_return_mean`, fresh
greedy episodes of the weights each job delivers): a seed that lands in a local optimum drags its config
down, a lucky one lifts it by only 1/seeds of its luck. With 3 seeds the IQM would be that same mean
(trimming 25% of 3 cuts nothing). A trial with a failed job is FAIL. Jobs report their evaluations to the
trial and stop at the next one once it is pruned (`dqn.trial`).

The study lives in an Optuna RDB storage (SQLite `mlruns/optuna.db` by default) and outlives the command.
Planning a batch (ending the trials of commands that are gone, counting, asking) happens under a lock
file beside a SQLite storage, so commands that share a study never ask past `n_trials` nor rerun a lost
trial twice. A trial cut short by a stopped or killed command ends FAIL, tagged `interrupted`, does not
count, and is queued to be run again with the same params.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from omegaconf import DictConfig
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from dqn.search.results import write_results
from dqn.search.study import INTERRUPTED, SCORES, Search, check_search, open_study
from dqn.search.trial import FINISHED, JUDGED_AGAINST, PRUNED, PRUNER, SEEDS, judge, rdb_storage, trial_id
from dqn.sweep_protocol import SUPERSEDED, read_sweep, sweep_stopping
from dqn.tracking.store import FolderLock, folder_in_use, redact, sqlite_path, store_lock, tracking_uri

log = logging.getLogger("dqn")
OWNER = "owner"  # trial user attr: {"sweep_dir", "host"}, the command running it


def study_parent(client: MlflowClient, experiment_id: str, search: Search, tags: Mapping[str, str]) -> Run:
    """The study's one parent run: the run an earlier or concurrent command opened, RUNNING again with this
    command's settings in its tags, else a new run with `tags`. Under the storage's lock, so two commands
    started at once make one."""
    with store_lock(search.storage):
        runs = client.search_runs(
            [experiment_id],
            f"tags.study_name = '{search.study_name}' and tags.`dqn.role` = 'sweep'",
            order_by=["attributes.start_time ASC"],
        )
        # the same database is the same study whatever password reaches it: compare the URLs masked
        runs = [run for run in runs if redact(run.data.tags.get("optuna_storage", "")) == redact(search.storage)]
        if not runs:
            return client.create_run(
                experiment_id, run_name=f"search {search.study_name}", tags={**tags, **search.tags}
            )
    run_id = runs[0].info.run_id
    client.update_run(run_id, status="RUNNING")
    for key, value in search.tags.items():
        client.set_tag(run_id, key, value)
    if "end_reason" in runs[0].data.tags:
        client.delete_tag(run_id, "end_reason")
    return client.get_run(run_id)


def owner_alive(trial: FrozenTrial, locked: bool) -> bool:
    """Whether the command that runs `trial` is alive: it holds its sweep folder's lock while it lives.
    A folder this machine cannot see is on another machine, and its command is taken as alive."""
    owner = trial.user_attrs.get(OWNER)
    if owner is None:  # written just after the ask, under the same lock if `locked`: else give it a minute
        return not locked and (datetime.now() - (trial.datetime_start or datetime.now())).total_seconds() < 60
    folder = Path(owner["sweep_dir"])
    return folder_in_use(folder) if folder.is_dir() else owner.get("host") != socket.gethostname()


class OptunaSearch:
    """The sweeper's work: plan a batch of trials, launch their jobs, tell Optuna how each trial ended."""

    def __init__(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.job_idx = 0
        self.running: list[optuna.Trial] = []
        self.mlflow: tuple[MlflowClient, Run] | None = None
        self.storage: BaseStorage | None = None  # the study's, for writes to a trial by its number

    def sweep(self, arguments: list[str]) -> optuna.Study:
        search = check_search(self.config, self.hydra_context.config_loader)
        study = open_study(search)
        self.storage = rdb_storage(search.storage)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.mlflow = self.parent()
        lock = FolderLock(self.sweep_dir)  # other commands see this command's trials as alive
        log.info(
            "study %s in %s: %d trials of %d seeds, sampler %s, pruner %s",
            search.study_name, redact(search.storage), search.n_trials, len(search.seeds),
            search.settings.sampler, search.settings.pruner,
        )  # fmt: skip
        try:
            while self.plan(study, search):
                batch = [job for trial in self.running for job in search.jobs(trial)]
                returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
                self.job_idx += len(returns)
                for i, trial in enumerate(self.running):
                    chunk = returns[i * len(search.seeds) : (i + 1) * len(search.seeds)]
                    self.finish(study, search, trial, chunk)
                self.running = []
        finally:
            for trial in self.running:  # a second signal, an error: these trials did not finish here
                with suppress(Exception):
                    self.interrupt(study, trial.number, "the command running it stopped")
            lock.release()

        write_results(study, search, self.sweep_dir, self.mlflow)
        return study

    def parent(self) -> tuple[MlflowClient, Run] | None:
        """The study's parent MLflow run, which dqn.sweep's callback opened for this command."""
        sweep = read_sweep(self.sweep_dir)
        if not self.config.mlflow.enabled or sweep is None:
            return None
        client = MlflowClient(tracking_uri(self.config.mlflow.tracking_uri, Path.cwd()))
        return client, client.get_run(sweep["parent_run_id"])

    def plan(self, study: optuna.Study, search: Search) -> bool:
        """Ask the next batch's trials into `self.running`; False when the study has its trials or the
        command is stopping. Under the storage's lock: what is counted is what is asked."""
        with store_lock(search.storage):
            self.reclaim(study, locked=sqlite_path(search.storage) is not None)
            if sweep_stopping(self.sweep_dir):
                return False
            to_go = search.n_trials - counted(study)
            if search.grid:  # a grid ends when each point has run once; lost ones are queued again
                to_go = min(to_go, grid_left(study, search.grid))
            # The batch is judged against the trials finished now: none of its own, whatever their timing.
            finished = [t.number for t in study.get_trials(deepcopy=False, states=FINISHED)]
            for _ in range(min(search.settings.n_jobs, max(to_go, 0))):
                study.sampler = search.sampler(counted(study))
                trial = study.ask(fixed_distributions=search.space)
                trial.set_user_attr(OWNER, {"sweep_dir": str(self.sweep_dir), "host": socket.gethostname()})
                trial.set_user_attr(PRUNER, search.pruner)
                trial.set_user_attr(SEEDS, search.seeds)
                trial.set_user_attr(JUDGED_AGAINST, finished)
                self.running.append(trial)
                self.name_successor(trial)
        return bool(self.running)

    def reclaim(self, study: optuna.Study, locked: bool) -> None:
        """End the RUNNING trials of commands that are gone, and their RUNNING job runs, and queue them again."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if owner_alive(trial, locked):
                continue
            log.warning("trial %d: the command running it is gone; it will run again", trial.number)
            self.interrupt(study, trial.number, "the command running it was killed")
            if self.mlflow is not None:
                for run in trial_runs(*self.mlflow, trial.number):
                    folder = run.data.tags.get("output_dir")
                    if run.info.status == "RUNNING" and not (folder and folder_in_use(Path(folder))):
                        self.mlflow[0].set_tag(
                            run.info.run_id, "end_reason", "the search command running it was killed"
                        )
                        self.mlflow[0].set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))

    def interrupt(self, study: optuna.Study, number: int, why: str) -> None:
        """`interrupt` the trial, and mark every run of its jobs superseded, the FINISHED ones too: its params
        run again as a new trial, whose runs are the ones the report counts (one score per config and seed)."""
        interrupt(study, self.storage, number, why)
        if self.mlflow is None:
            return
        client = self.mlflow[0]
        for run in trial_runs(*self.mlflow, number):
            client.set_tag(run.info.run_id, SUPERSEDED, "true")
            client.set_tag(run.info.run_id, "superseded_reason", f"trial {number} was interrupted ({why})")

    def name_successor(self, trial: optuna.Trial) -> None:
        """Tag the runs that a rerun trial supersedes with its number (`superseded_by`)."""
        rerun_of = trial.user_attrs.get("rerun_of")
        if self.mlflow is None or rerun_of is None:
            return
        for run in trial_runs(*self.mlflow, rerun_of):
            self.mlflow[0].set_tag(run.info.run_id, "superseded_by", f"trial {trial.number}")

    def finish(self, study: optuna.Study, search: Search, trial: optuna.Trial, returns: Sequence[JobReturn]) -> None:
        """Tell Optuna how the trial ended: PRUNED if its judgement says so (`dqn.search.trial.judge`, made again
        here on every report that arrived), FAIL if a job failed (or, in a stopping command, interrupted:
        queued again), else COMPLETE with the mean final score of its seeds."""
        scores = [r.return_value if r.status is JobStatus.COMPLETED else None for r in returns]
        storage, key = self.storage, trial_id(self.storage, study.study_name, trial.number)
        verdict = judge(storage.get_trial(key), study.get_trials(deepcopy=False, states=FINISHED))
        for step, value in verdict.values.items():  # what the sampler and later trials see: no step past the cut
            storage.set_trial_intermediate_value(key, step, value)
        for name, value in verdict.rungs.items():
            storage.set_trial_system_attr(key, name, value)
        if verdict.pruned_at is not None:
            record = {"step": verdict.pruned_at, "value": verdict.values[verdict.pruned_at]}
            storage.set_trial_user_attr(key, PRUNED, record)
            state = tell(study, trial, TrialState.PRUNED)
        elif None in scores and sweep_stopping(self.sweep_dir):
            self.interrupt(study, trial.number, "the command running it was stopped")
            state = TrialState.FAIL
        elif None in scores:
            failed = [seed for seed, score in zip(search.seeds, scores, strict=True) if score is None]
            trial.set_user_attr("failed_seeds", failed)
            state = tell(study, trial, TrialState.FAIL)
        else:
            trial.set_user_attr(SCORES, {str(seed): s for seed, s in zip(search.seeds, scores, strict=True)})
            state = tell(study, trial, TrialState.COMPLETE, sum(scores) / len(scores))
        if self.mlflow is not None:
            for run in trial_runs(*self.mlflow, trial.number):
                self.mlflow[0].set_tag(run.info.run_id, "trial_state", state.name)


def counted(study: optuna.Study) -> int:
    """Trials that count toward n_trials: finished ones (but not the interrupted) and running ones."""
    return sum(counts(trial) for trial in study.get_trials(deepcopy=False))


def counts(trial: FrozenTrial) -> bool:
    if trial.state == TrialState.FAIL:
        return INTERRUPTED not in trial.user_attrs
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def grid_left(study: optuna.Study, grid: Mapping[str, list[Any]]) -> int:
    """Grid points no trial has taken yet, plus the trials queued to run again."""
    trials = study.get_trials(deepcopy=False)
    taken = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return math.prod(len(values) for values in grid.values()) - len(taken) + waiting


def tell(study: optuna.Study, trial: optuna.Trial | int, state: TrialState, value: float | None = None) -> TrialState:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as error:  # the grid sampler asks an optimize loop to stop when the grid is done
        if "Study.stop" not in str(error):
            raise
    return state


def interrupt(study: optuna.Study, storage: BaseStorage, number: int, why: str) -> None:
    """A trial a stopped or killed command could not finish: FAIL, marked so it does not count, and queued
    to run again with the same params. Another command may have done it first: then nothing happens."""
    key = trial_id(storage, study.study_name, number)
    trial = storage.get_trial(key)
    if trial.state.is_finished():
        return
    try:
        storage.set_trial_user_attr(key, INTERRUPTED, why)
        tell(study, number, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    study.enqueue_trial(trial.params, user_attrs={"rerun_of": number})


def trial_runs(client: MlflowClient, parent: Run, number: int) -> list[Run]:
    """The MLflow runs of a trial's jobs, in every command that ran them."""
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.sweep_id = '{parent.data.tags['sweep_id']}' and tags.trial_number = '{number}'",
    )
