"""The job's side of a search: a trial's seeds report into one Optuna trial, and all stop once it is pruned."""

import optuna
import pytest
from optuna.distributions import FloatDistribution

from dqn.config import TrainConfig, TrialConfig
from dqn.search.trial import Pruned, Reporter, trial_means
from dqn.tracking.recorder import Recorder

SPACE = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}


def test_the_trial_value_at_a_step_is_the_mean_over_its_seeds_of_their_evaluations_so_far():
    attrs = {"evals_seed_0": {"1000": 50.0, "500": -100.0}, "evals_seed_1": {"500": -300.0}, "pruner": {}}
    assert trial_means(attrs) == {500: -200.0, 1000: -25.0}  # seed 0 at 1000: (-100 + 50) / 2; seed 1 not there
    assert trial_means(attrs, until=500) == {500: -200.0}
    attrs["evals_seed_1"]["1000"] = 100.0
    assert trial_means(attrs) == {500: -200.0, 1000: (-25.0 + -100.0) / 2}


def study_with_a_finished_trial(tmp_path, pruner: dict) -> tuple[optuna.Study, optuna.Trial]:
    """A study whose one COMPLETE trial scored 100 at steps 500 to 2000 (and at successive halving's rungs, as
    a trial that went through them would have), and a running trial to report into."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize")
    evals = {step: 100.0 for step in (500, 1000, 1500, 2000)}
    rungs = {f"completed_rung_{rung}": 100.0 for rung in range(4)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=SPACE, value=100.0,
                                              intermediate_values=evals, system_attrs=rungs))  # fmt: skip
    trial = study.ask(SPACE)
    trial.set_user_attr("pruner", pruner)
    return study, trial


def reporter(study: optuna.Study, trial: optuna.Trial, seed: int) -> Reporter:
    return Reporter(study, trial._trial_id, trial.number, seed, Recorder(None, None))


@pytest.mark.parametrize(
    "pruner",
    [{"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0}, {"kind": "successive_halving"}],
)
def test_a_trial_behind_is_pruned_and_its_other_seeds_stop_at_their_next_evaluation(tmp_path, pruner):
    study, trial = study_with_a_finished_trial(tmp_path, pruner)
    first, second = reporter(study, trial, seed=0), reporter(study, trial, seed=1)
    first.check({"loss": 1.0}, 400)  # not an evaluation: nothing happens
    with pytest.raises(Pruned, match=f"trial {trial.number} pruned at step 500: its seeds. mean"):
        first.check({"eval_return_mean": -50.0}, 500)
    with pytest.raises(Pruned, match="seed 0 found it behind at step 500"):
        second.check({"eval_return_mean": 300.0}, 500)
    attrs = study._storage.get_trial(trial._trial_id).user_attrs
    assert attrs["pruned"] == {"step": 500, "seed": 0, "value": -50.0}
    assert attrs["evals_seed_1"] == {"500": 300.0}  # the sibling's evaluation is kept all the same


def test_a_trial_ahead_goes_on_and_reports_the_mean_of_its_seeds(tmp_path):
    study, trial = study_with_a_finished_trial(tmp_path, {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    reporter(study, trial, seed=0).check({"eval_return_mean": 150.0}, 500)
    reporter(study, trial, seed=1).check({"eval_return_mean": 250.0}, 500)
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {500: 200.0}


def test_a_trial_that_has_ended_takes_no_more_reports(tmp_path):
    """A job of a trial the search has already told (a late job, a resumed run) trains on without pruning."""
    study, trial = study_with_a_finished_trial(tmp_path, {"kind": "none"})
    late = reporter(study, trial, seed=0)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    late.check({"eval_return_mean": -1000.0}, 500)
    late.check({"eval_return_mean": -1000.0}, 1000)
    assert late.study is None


def test_a_requeued_job_keeps_its_seeds_earlier_evaluations(tmp_path):
    """SLURM requeues a job mid-trial: its new process reopens the trial with the evaluations it reported
    before, so the running mean goes on from them instead of restarting at the requeue step."""
    study, trial = study_with_a_finished_trial(tmp_path, {"kind": "none"})
    reporter(study, trial, seed=0).check({"eval_return_mean": -100.0}, 500)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    settings = TrainConfig(seed=0, trial=TrialConfig(study=study.study_name, storage=url, number=trial.number))
    requeued = Reporter.open(settings, Recorder(None, None))
    requeued.check({"eval_return_mean": 100.0}, 1000)
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {500: -100.0, 1000: 0.0}
