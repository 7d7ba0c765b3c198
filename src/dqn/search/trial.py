"""A job's side of an Optuna search: report each greedy evaluation to its trial, stop when the trial is pruned.

A trial trains several seeds, one job each, often at the same time. Each job keeps its own evaluations
in the trial's user attribute `evals_seed_<seed>` (one writer per key, so no job overwrites another's).
The trial's intermediate value at step s (`trial_means`) is, over the seeds that have reported s, the mean
of each seed's evaluations up to s: the area under its learning curve so far, not its latest evaluation.
A 10-episode evaluation is noisy; on the full-budget local_optimum grid the running mean ranked the
configs' final scores far more steadily (docs/search.md). At each evaluation the job asks the trial's
pruner about that value against the other trials' at the same step; a pruned trial is marked (`pruned`),
and its other seeds stop at their own next evaluation. The search (`dqn.search`) writes the final values
when it ends the trial.

Pruning is an aid, never a reason to fail: if the study cannot be reached, the job trains on and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from dqn.config import TrainConfig
from dqn.tracking.recorder import Recorder
from dqn.tracking.store import first_line

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("dqn")
EVALS = "evals_seed_"  # + seed: {str(step): eval_return_mean}, written by that seed's job only
PRUNED = "pruned"  # {"step", "seed", "value"}: the trial's mean that the pruner judged, by the job that asked
PRUNER = "pruner"  # the pruner the search chose for the trial: {"kind", "n_startup_trials", "n_warmup_steps"}
METRIC = "eval_return_mean"

CheckFn = Callable[[Mapping[str, float], int], None]


class Pruned(KeyboardInterrupt):
    """The job's trial was pruned: training stops at this evaluation and the run ends KILLED, tagged `pruned`.

    A KeyboardInterrupt, like `dqn.learn.Stopped`: a requested stop, not a failure of the job."""


def trial_means(user_attrs: Mapping[str, Any], until: int | None = None) -> dict[int, float]:
    """The trial's intermediate values: at each step s (up to `until`), the mean over the seeds that reported
    s of each one's mean evaluation up to s."""
    values: dict[int, list[float]] = {}
    for key, evals in user_attrs.items():
        if key.startswith(EVALS):
            total = 0.0
            for n, (step, value) in enumerate(sorted((int(step), float(value)) for step, value in evals.items())):
                total += value
                if until is None or step <= until:
                    values.setdefault(step, []).append(total / (n + 1))
    return {step: sum(seeds) / len(seeds) for step, seeds in sorted(values.items())}


def make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner a search's `pruner` setting names (dqn.config.SearchConfig)."""
    import optuna

    if spec["kind"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec["n_startup_trials"], n_warmup_steps=spec["n_warmup_steps"]
        )
    if spec["kind"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def pruning(settings: TrainConfig, recorder: Recorder) -> CheckFn:
    """What the job calls with every metrics dict it logs: raises Pruned at an evaluation of a pruned trial.

    Outside a search (`trial.study` null) it does nothing."""
    if settings.trial.study is None:
        return lambda metrics, step: None
    reporter = Reporter.open(settings, recorder)
    return reporter.check if reporter is not None else lambda metrics, step: None


class Reporter:
    """One job's link to its trial: its evaluations in, the pruning decision out."""

    def __init__(self, study: optuna.Study, trial_id: int, number: int, seed: int, recorder: Recorder) -> None:
        self.study, self.trial_id, self.number, self.seed, self.recorder = study, trial_id, number, seed, recorder
        self.evals: dict[str, float] = {}
        self.pruner: optuna.pruners.BasePruner | None = None

    @classmethod
    def open(cls, settings: TrainConfig, recorder: Recorder) -> Reporter | None:
        """The reporter of the job's trial, or None (said in one line) if the trial cannot take reports."""
        trial = settings.trial
        try:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = optuna.storages.RDBStorage(trial.storage, engine_kwargs=engine_kwargs(trial.storage))
            study = optuna.load_study(study_name=trial.study, storage=storage)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
            state = storage.get_trial(trial_id).state
        except Exception as error:  # a missing study, an unreachable database: train on without pruning
            log.warning(
                "trial %s of study %s unavailable, no pruning: %s", trial.number, trial.study, first_line(error)
            )
            return None
        if state != optuna.trial.TrialState.RUNNING:  # e.g. a resumed run of a trial that has ended
            log.info("trial %s of study %s is %s: no pruning", trial.number, trial.study, state.name)
            return None
        reporter = cls(study, trial_id, trial.number, settings.seed, recorder)
        # A requeued job continues its run: its seed's earlier evaluations stay in the running mean.
        reporter.evals = dict(storage.get_trial(trial_id).user_attrs.get(f"{EVALS}{settings.seed}", {}))
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
        """Record this seed's evaluation; the `pruned` record if the trial is (now) pruned, else None."""
        from optuna.trial import FrozenTrial, TrialState

        storage = self.study._storage
        self.evals[str(step)] = value
        storage.set_trial_user_attr(self.trial_id, f"{EVALS}{self.seed}", self.evals)
        trial = storage.get_trial(self.trial_id)
        if trial.state != TrialState.RUNNING:
            self.study = None
            return None
        if PRUNED in trial.user_attrs:
            return trial.user_attrs[PRUNED]
        means = trial_means(trial.user_attrs, until=step)
        storage.set_trial_intermediate_value(self.trial_id, step, means[step])
        if self.pruner is None:
            self.pruner = make_pruner(trial.user_attrs[PRUNER])
        seen = FrozenTrial(
            number=trial.number,
            state=trial.state,
            value=None,
            datetime_start=trial.datetime_start,
            datetime_complete=None,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=trial.user_attrs,
            system_attrs=trial.system_attrs,
            intermediate_values=means,
            trial_id=self.trial_id,
        )
        if not self.pruner.prune(self.study, seen):
            return None
        record = {"step": step, "seed": self.seed, "value": means[step]}
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
        if record["seed"] == self.seed and record["step"] == step:
            why = f"its seeds' mean {METRIC} so far, {record['value']:.1f}, fell behind the other trials"
        else:
            why = f"seed {record['seed']} found it behind at step {record['step']}"
        raise Pruned(f"trial {self.number} pruned at step {step}: {why}")


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite makes a writer wait 5 s before `database is locked`; a search's jobs and commands can wait longer."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
