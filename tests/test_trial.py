"""The job's side of a search: a trial's seeds report into one Optuna trial, and all stop once it is pruned."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import BaseStorage

from dqn.config import TrainConfig, TrialConfig
from dqn.search.trial import Reporter, rdb_storage, trial_means
from dqn.stops import Pruned
from dqn.tracking.recorder import Recorder

SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
MEDIAN = {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0}


def test_the_trial_value_at_a_step_is_the_mean_over_all_its_seeds_of_their_evaluations_so_far():
    attrs = {"evals_seed_0": {"1000": 50.0, "500": -100.0}, "evals_seed_1": {"500": -300.0}, "pruner": {}}
    assert trial_means(attrs, [0, 1]) == {500: -200.0}  # seed 1 has not reached 1000: no value there yet
    assert trial_means(attrs, [0, 1, 2]) == {}  # seed 2 has reported nothing
    attrs["evals_seed_1"]["1000"] = 100.0
    assert trial_means(attrs, [0, 1]) == {500: -200.0, 1000: ((-100.0 + 50.0) / 2 + (-300.0 + 100.0) / 2) / 2}


def finished(values: dict[int, float], value: float) -> optuna.trial.FrozenTrial:
    rungs = {f"completed_rung_{rung}": value for rung in range(4)}  # as successive halving would have left it
    return optuna.trial.create_trial(params={"lr": 1e-3}, distributions=SPACE, value=value,
                                     intermediate_values=values, system_attrs=rungs)  # fmt: skip


def running(study: optuna.Study, pruner: dict, seeds: list[int], against: list[int]) -> optuna.Trial:
    """A trial of a batch, as the search asks it: its pruner, its seeds, the trials it is judged against."""
    trial = study.ask(SPACE)
    trial.set_user_attr("pruner", pruner)
    trial.set_user_attr("seeds", seeds)
    trial.set_user_attr("judged_against", against)
    return trial


def study_with_a_finished_trial(tmp_path, pruner: dict, seeds=(0, 1)) -> tuple[BaseStorage, optuna.Study, optuna.Trial]:
    """A study whose one COMPLETE trial scored 100 at steps 500 to 2000, and a running trial to report into."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = rdb_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(storage=storage, direction="maximize")
    study.add_trial(finished({step: 100.0 for step in (500, 1000, 1500, 2000)}, 100.0))
    return storage, study, running(study, pruner, list(seeds), [0])


def reporter(storage: BaseStorage, study: optuna.Study, trial: optuna.Trial, seed: int) -> Reporter:
    return Reporter(study, storage, trial.number, seed, Recorder(None, None))


@pytest.mark.parametrize("pruner", [MEDIAN, {"kind": "successive_halving"}])
def test_a_trial_behind_is_judged_once_all_its_seeds_reach_a_step_and_the_others_stop_at_their_next(tmp_path, pruner):
    storage, study, trial = study_with_a_finished_trial(tmp_path, pruner)
    first, second = reporter(storage, study, trial, seed=0), reporter(storage, study, trial, seed=1)
    first.check({"loss": 1.0}, 400)  # not an evaluation: nothing happens
    first.check({"eval_return_mean": -250.0}, 500)  # alone at 500: no judgement yet, whatever its value
    first.check({"eval_return_mean": -250.0}, 1000)
    with pytest.raises(Pruned, match=f"trial {trial.number} pruned at step 500: at step 500 its seeds. mean"):
        second.check({"eval_return_mean": 150.0}, 500)  # both at 500: (-250 + 150) / 2 < 100
    with pytest.raises(Pruned, match="pruned at step 1500: at step 500"):
        first.check({"eval_return_mean": 300.0}, 1500)
    stored = study.trials[trial.number]
    assert stored.user_attrs["pruned"] == {"step": 500, "value": -50.0}
    assert stored.intermediate_values == {500: -50.0}  # nothing past the cut
    assert stored.user_attrs["evals_seed_0"] == {"500": -250.0, "1000": -250.0, "1500": 300.0}  # kept all the same


def test_a_trial_ahead_goes_on_and_reports_the_mean_of_its_seeds(tmp_path):
    storage, study, trial = study_with_a_finished_trial(tmp_path, MEDIAN)
    reporter(storage, study, trial, seed=0).check({"eval_return_mean": 150.0}, 500)
    reporter(storage, study, trial, seed=1).check({"eval_return_mean": 250.0}, 500)
    assert study.trials[trial.number].intermediate_values == {500: 200.0}


# Two finished trials to be judged against (medians 50 at step 500 and 200 at 1000, the median pruner
# comparing a trial's best value so far) and two batch-mates' scripted evaluations, seed by seed.
BEFORE = [({500: 100.0, 1000: 300.0}, 300.0), ({500: 0.0, 1000: 100.0}, 100.0)]
EVALS = {
    "A": {0: {500: 200.0, 1000: 400.0}, 1: {500: -50.0, 1000: 350.0}},  # 75 at 500, 225 at 1000: goes on
    "B": {0: {500: 120.0, 1000: 100.0}, 1: {500: 0.0, 1000: 100.0}},  # 60 at 500, 80 at 1000: behind there
}
ORDERS = [
    [("A", 0, 500), ("A", 0, 1000), ("A", 1, 500), ("A", 1, 1000),
     ("B", 0, 500), ("B", 0, 1000), ("B", 1, 500), ("B", 1, 1000)],
    [("B", 1, 500), ("A", 1, 500), ("B", 1, 1000), ("A", 1, 1000),
     ("B", 0, 500), ("A", 0, 500), ("B", 0, 1000), ("A", 0, 1000)],
    [("A", 1, 500), ("B", 1, 500), ("A", 0, 500), ("B", 0, 500),
     ("A", 0, 1000), ("B", 1, 1000), ("A", 1, 1000), ("B", 0, 1000)],
]  # fmt: skip


def batch(order: list[tuple[str, int, int]], late: int | None) -> dict[str, tuple]:
    """Play the reports of `order` into an in-memory study; before report `late`, a trial that another
    command ran finishes far ahead. Each trial's `pruned` record and intermediate values."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize")
    for values, value in BEFORE:
        study.add_trial(finished(values, value))
    trials = {name: running(study, MEDIAN, [0, 1], [0, 1]) for name in EVALS}
    reporters = {(name, seed): reporter(storage, study, trials[name], seed) for name in EVALS for seed in (0, 1)}
    stopped = set()
    for i, (name, seed, step) in enumerate(order):
        if i == late:
            study.add_trial(finished({500: 1000.0, 1000: 1000.0}, 1000.0))
        if (name, seed) in stopped:
            continue
        try:
            reporters[name, seed].check({"eval_return_mean": EVALS[name][seed][step]}, step)
        except Pruned:
            stopped.add((name, seed))
    stored = {name: study.trials[trial.number] for name, trial in trials.items()}
    return {name: (t.user_attrs.get("pruned"), t.intermediate_values) for name, t in stored.items()}


@pytest.mark.parametrize(("order", "late"), [(ORDERS[0], None), (ORDERS[1], 0), (ORDERS[2], 4), (ORDERS[0], 6)])
def test_a_pruning_decision_does_not_depend_on_the_order_batch_mates_report_in(order, late):
    """Judged by whichever seed reports first, A would be cut at 500 when its seed 1 (-50 < 50) comes first,
    and B at 500 when its seed 1 (0) does; judged against every COMPLETE trial at the time, a trial that
    finished meanwhile (1000 at every step) would raise the medians. Neither counts: the same verdicts in
    every order, computed by hand from the scripted values."""
    assert batch(order, late) == {
        "A": (None, {500: 75.0, 1000: ((200.0 + 400.0) / 2 + (-50.0 + 350.0) / 2) / 2}),
        "B": ({"step": 1000, "value": 80.0}, {500: 60.0, 1000: ((120.0 + 100.0) / 2 + (0.0 + 100.0) / 2) / 2}),
    }


def test_a_trial_that_has_ended_takes_no_more_reports(tmp_path):
    """A job of a trial the search has already told (a late job, a resumed run) trains on without pruning."""
    storage, study, trial = study_with_a_finished_trial(tmp_path, {"kind": "none"})
    late = reporter(storage, study, trial, seed=0)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    late.check({"eval_return_mean": -1000.0}, 500)
    late.check({"eval_return_mean": -1000.0}, 1000)
    assert late.study is None


def test_a_requeued_job_keeps_its_seeds_earlier_evaluations(tmp_path):
    """SLURM requeues a job mid-trial: its new process reopens the trial with the evaluations it reported
    before, so the running mean goes on from them instead of restarting at the requeue step."""
    storage, study, trial = study_with_a_finished_trial(tmp_path, {"kind": "none"}, seeds=[0])
    reporter(storage, study, trial, seed=0).check({"eval_return_mean": -100.0}, 500)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = TrainConfig(seed=0, trial=TrialConfig(study=study.study_name, storage=url, number=trial.number))
    requeued = Reporter.open(settings, Recorder(None, None))
    requeued.check({"eval_return_mean": 100.0}, 1000)
    assert study.trials[trial.number].intermediate_values == {500: -100.0, 1000: 0.0}
