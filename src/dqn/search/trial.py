"""A job's side of an Optuna search: report each greedy evaluation to its trial, stop when the trial is pruned.

A trial trains several seeds, one job each, often at the same time. Each job keeps its own evaluations
in the trial's user attribute `evals_seed_<seed>` (one writer per key, so no job overwrites another's).
The trial's intermediate value at step s (`trial_means`) is the mean over **all** its seeds of each
seed's mean evaluation up to s (the area under its learning curve so far: a 10-episode evaluation is
noisy, docs/search.md); a step some seed has not reached yet has no value.

Pruning decides the same whatever the workers' timing (`judge`): a trial is judged at each step all
its seeds have reported, in step order, by its pruner replayed on a fixed set of trials, those that
had finished (COMPLETE or PRUNED) when its batch was asked (`judged_against`): neither a batch-mate
nor a trial of another command finishing meanwhile can change a verdict. Every job reruns the judgement
after each of its reports; the first to see the trial behind marks it (`pruned`, the same record
whoever writes it), and its other seeds stop at their own next evaluation. The search (`dqn.search`)
judges once more when it ends the trial, so a report that failed to arrive cannot change the outcome.

Pruning is an aid, never a reason to fail: if the study cannot be reached, the job trains on and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from dqn.config import TrainConfig, first_line
from dqn.stops import Pruned
from dqn.tracking.recorder import Recorder

log = logging.getLogger("dqn")
EVALS = "evals_seed_"  # + seed: {str(step): eval_return_mean}, written by that seed's job only
PRUNED = "pruned"  # {"step", "value"}: where the trial fell behind and its seeds' mean there
PRUNER = "pruner"  # the pruner the search chose for the trial: {"kind", "n_startup_trials", "n_warmup_steps"}
SEEDS = "seeds"  # the trial's seeds: a step counts once every one of them has reported it
JUDGED_AGAINST = "judged_against"  # numbers of the trials that had finished when the trial's batch was asked
RUNG = "completed_rung_"  # successive halving's marks (Optuna's system attrs), kept on the real trial
METRIC = "eval_return_mean"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

CheckFn = Callable[[Mapping[str, float], int], None]


@dataclass(frozen=True)
class Verdict:
    """A trial judged on what its seeds have reported so far."""

    values: dict[int, float]  # its intermediate values: at each step all seeds reached, up to the cut
    pruned_at: int | None  # the first step it fell behind at, if any
    rungs: dict[str, Any]  # successive halving's marks, for later trials to be judged against


def running_means(evals: Mapping[str, float]) -> dict[int, float]:
    """One seed's mean evaluation up to each of its steps."""
    means, total = {}, 0.0
    for n, (step, value) in enumerate(sorted((int(step), float(value)) for step, value in evals.items())):
        total += value
        means[step] = total / (n + 1)
    return means


def trial_means(user_attrs: Mapping[str, Any], seeds: Sequence[int]) -> dict[int, float]:
    """The trial's intermediate values: at each step every one of `seeds` has reported, the mean over them of
    each one's mean evaluation up to that step. A seed that has not reached a step yet leaves it out: a
    value computed over the seeds that happen to be there would depend on which job runs faster."""
    curves = [running_means(user_attrs.get(f"{EVALS}{seed}", {})) for seed in seeds]
    steps = set.intersection(*(set(curve) for curve in curves)) if curves else set()
    return {step: sum(curve[step] for curve in curves) / len(curves) for step in sorted(steps)}


PRUNERS: dict[str, Callable[[Mapping[str, Any]], optuna.pruners.BasePruner]] = {
    "median": lambda spec: optuna.pruners.MedianPruner(
        n_startup_trials=spec["n_startup_trials"], n_warmup_steps=spec["n_warmup_steps"]
    ),
    "successive_halving": lambda spec: optuna.pruners.SuccessiveHalvingPruner(),
    "none": lambda spec: optuna.pruners.NopPruner(),
}
"""Every pruner by the name a search's `pruner` setting takes, built from the trial's `pruner` record
(`dqn.search.study.Search.pruner`): a new pruner is its entry here."""


def make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner a trial's `pruner` record names."""
    return PRUNERS[spec["kind"]](spec)


def judge(trial: FrozenTrial, finished: Sequence[FrozenTrial]) -> Verdict:
    """Replay the trial's pruner, step by step, on an in-memory study that holds only the trials it is judged
    against (those of `finished` named in its `judged_against`): Optuna's own pruners, on a set that no job's
    timing can change, so the same reports always give the same verdict."""
    attrs = trial.user_attrs
    values = trial_means(attrs, attrs[SEEDS])
    against = set(attrs[JUDGED_AGAINST])
    study = optuna.create_study(direction="maximize", pruner=make_pruner(attrs[PRUNER]))
    study.add_trials([t for t in finished if t.number in against])
    replay = study.ask()
    for step, value in values.items():
        replay.report(value, step)
        if replay.should_prune():
            return Verdict({s: v for s, v in values.items() if s <= step}, step, rungs(study))
    return Verdict(values, None, rungs(study))


def rungs(study: optuna.Study) -> dict[str, Any]:
    """The marks successive halving left on the replayed trial (the study's last)."""
    return {key: value for key, value in study.trials[-1].system_attrs.items() if key.startswith(RUNG)}


def pruning(settings: TrainConfig, recorder: Recorder) -> CheckFn:
    """What the job calls with every metrics dict it logs: raises Pruned at an evaluation of a pruned trial.

    Outside a search (`trial.study` null) it does nothing."""
    if settings.trial.study is None:
        return lambda metrics, step: None
    reporter = Reporter.open(settings, recorder)
    return reporter.check if reporter is not None else lambda metrics, step: None


class Reporter:
    """One job's link to its trial: its evaluations in, the pruning decision out."""

    def __init__(self, study: optuna.Study, storage: BaseStorage, number: int, seed: int, recorder: Recorder) -> None:
        self.study, self.storage, self.number, self.seed, self.recorder = study, storage, number, seed, recorder
        self.trial_id = trial_id(storage, study.study_name, number)
        self.evals: dict[str, float] = {}

    @classmethod
    def open(cls, settings: TrainConfig, recorder: Recorder) -> Reporter | None:
        """The reporter of the job's trial, or None (said in one line) if the trial cannot take reports."""
        trial = settings.trial
        try:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = rdb_storage(trial.storage)
            study = optuna.load_study(study_name=trial.study, storage=storage)
            state = storage.get_trial(trial_id(storage, trial.study, trial.number)).state
        except Exception as error:  # a missing study, an unreachable database: train on without pruning
            log.warning(
                "trial %s of study %s unavailable, no pruning: %s", trial.number, trial.study, first_line(error)
            )
            return None
        if state != TrialState.RUNNING:  # e.g. a resumed run of a trial that has ended
            log.info("trial %s of study %s is %s: no pruning", trial.number, trial.study, state.name)
            return None
        reporter = cls(study, storage, trial.number, settings.seed, recorder)
        # A requeued job continues its run: its seed's earlier evaluations stay in the running mean.
        reporter.evals = dict(storage.get_trial(reporter.trial_id).user_attrs.get(f"{EVALS}{settings.seed}", {}))
        return reporter

    def check(self, metrics: Mapping[str, float], step: int) -> None:
        if METRIC not in metrics or self.study is None:
            return
        try:
            verdict = self.report(step, metrics[METRIC])
        except Exception as error:  # the trial ended meanwhile, or the storage went away
            log.warning("trial %s: reporting failed, no more pruning: %s", self.number, first_line(error))
            self.study = None
            return
        if verdict is not None:
            self.stop(step, metrics[METRIC], verdict)

    def report(self, step: int, value: float) -> dict[str, Any] | None:
        """Record this seed's evaluation and judge the trial; the `pruned` record if it is (now) pruned."""
        storage = self.storage
        self.evals[str(step)] = value
        storage.set_trial_user_attr(self.trial_id, f"{EVALS}{self.seed}", self.evals)
        trial = storage.get_trial(self.trial_id)
        if trial.state != TrialState.RUNNING:
            self.study = None
            return None
        if PRUNED in trial.user_attrs:
            return trial.user_attrs[PRUNED]
        verdict = judge(trial, self.study.get_trials(deepcopy=False, states=FINISHED))
        for at, mean in verdict.values.items():
            if at not in trial.intermediate_values:
                storage.set_trial_intermediate_value(self.trial_id, at, mean)
        if verdict.pruned_at is None:
            return None
        record = {"step": verdict.pruned_at, "value": verdict.values[verdict.pruned_at]}
        storage.set_trial_user_attr(self.trial_id, PRUNED, record)
        return record

    def stop(self, step: int, value: float, record: Mapping[str, Any]) -> None:
        """Tag the run and raise Pruned; `ended` (dqn.tracking) ends it KILLED with the reason."""
        for key, tag in {
            "pruned": "true",
            "pruned_at_step": str(step),
            "pruned_eval_return_mean": repr(value),
            "pruned_trial_mean": repr(record["value"]),
        }.items():
            self.recorder.set_tag(key, tag)
        why = (
            f"at step {record['step']} its seeds' mean {METRIC} so far, {record['value']:.1f}, "
            "fell behind the trials finished before its batch"
        )
        raise Pruned(f"trial {self.number} pruned at step {step}: {why}")


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's storage, held by whoever writes to a trial: Optuna keeps a Study's and a Trial's own private.
    SQLite makes a writer wait 5 s before `database is locked`; a search's jobs and commands can wait longer."""
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    )


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of the study's trial `number`, by Optuna's public storage API."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
