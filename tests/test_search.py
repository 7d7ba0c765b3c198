"""Optuna searches for real: `python -m dqn.train -m hydra/sweeper=optuna` through a launcher, into one study."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dqn.config import ConfigError, SearchConfig
from dqn.search.space import bounds, grid_of, parse_space
from dqn.search.study import SAMPLERS, Search, default_study_name
from dqn.search.trial import PRUNERS, make_pruner
from tests.conftest import runs_of
from tests.services import clean_env, wait_until

TINY_JOB = [
    "total_steps=1500",
    "learning_starts=300",
    "eval_every=500",
    "eval_episodes=1",
    "env.eval_max_episode_steps=100",
    "network=mlp_small",
    "final_eval_episodes=2",
    "checkpoint_every=0",
    "mlflow.log_model=false",
]
# Two envs whose returns lie on either side of 0 whatever the agent does: CartPole pays +1 a step, Acrobot -1.
ENVS = "env.id=choice(CartPole-v1, Acrobot-v1)"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dqn.train", "-m", "hydra/sweeper=optuna", *TINY_JOB, *args]  # args win


def search(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def start(cwd: Path, *args: str, log: str) -> subprocess.Popen:
    """The search in a process group of its own, as a terminal runs it (Ctrl-C and kill reach every worker)."""
    with (cwd / log).open("w") as out:
        return subprocess.Popen(command(*args), cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def storage(project: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{project / 'mlruns' / 'optuna.db'}")


def trials(project: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage(project)).get_trials()


def split(runs):
    parents = [r for r in runs if r.data.tags.get("dqn.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("dqn.role") == "job"]
    return parents, children


def test_the_search_space_reads_hydra_sweep_syntax():
    space, declared, fixed = parse_space(
        {"lr": "tag(log, interval(1e-4, 3e-3))", "batch_size": "choice(32, 64)"},
        ["n_step=range(1, 4)", "total_steps=500"],
    )
    assert space == {
        "lr": FloatDistribution(1e-4, 3e-3, log=True),
        "batch_size": CategoricalDistribution([32, 64]),
        "n_step": IntDistribution(1, 3, step=1),
    }
    assert declared["lr"] == "tag(log, interval(1e-4, 3e-3))" and fixed == ["total_steps=500"]
    assert bounds(space["lr"]) == [1e-4, 3e-3] and bounds(space["batch_size"]) == [32, 64]  # what is validated
    assert grid_of({"n_step": space["n_step"], "batch_size": space["batch_size"]}, declared) == {
        "n_step": [1, 2, 3],
        "batch_size": [32, 64],
    }
    with pytest.raises(ConfigError, match="lr=tag.* is invalid with hydra.sweeper.sampler=grid"):
        grid_of(space, declared)


def test_the_default_study_name_tells_draws_of_a_search_apart_but_not_its_length():
    def name(**settings) -> str:
        space = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
        declared = {"lr": "tag(log, interval(1e-4, 1e-2))"}
        return default_study_name(Search(SearchConfig(**settings), space, declared, [], [0, 1, 2], "", "sqlite://", 8))

    assert name() == name(n_trials=30, n_jobs=4)  # more trials or workers: the same study, continued
    assert len({name(), name(sampler_seed=1), name(sampler_seed=2), name(pruner="none"), name(sampler="random"),
                name(pruner_warmup_steps=50_000), name(n_startup_trials=10)}) == 7  # fmt: skip
    assert name(sampler="random", n_startup_trials=3) == name(sampler="random")  # a TPE setting, unused


def test_a_trial_is_drawn_from_its_place_in_the_study_not_from_the_asks_before_it():
    """The sampler for the n-th trial is seeded from the sampler seed and n: asked in a fresh process (a
    resumed command) it draws what the first process drew; another place or sampler seed draws anew."""
    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True)}

    def draw(index: int, seed: int = 0, asked_before: int = 0) -> float:
        search = Search(SearchConfig(sampler_seed=seed), space, {}, [], [0], "", "", 4)
        study = optuna.create_study(direction="maximize")
        for _ in range(asked_before):  # a long-lived sampler would have moved on
            study.sampler = search.sampler(index)
            study.ask(space)
        study.sampler = search.sampler(index)
        return study.ask(space).params["lr"]

    assert draw(3) == draw(3, asked_before=2)
    assert len({draw(3), draw(4), draw(3, seed=1)}) == 3


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
def test_a_trial_that_falls_behind_is_pruned_and_its_jobs_stop_at_that_evaluation(project, store, pruner):
    """A finished trial that scored 0 at every evaluation (and passed successive halving's rungs) is already
    in the study: with the median pruner from one COMPLETE trial on, or successive halving (only the best
    of two reaches the next rung), the Acrobot trial (returns < 0) is pruned at its first evaluation, both
    seeds, run at once on two joblib workers, whichever order the grid sampler draws; the CartPole trial
    (returns > 0) completes."""
    study = optuna.create_study(storage=storage_url(project), study_name="prune", direction="maximize")
    envs = CategoricalDistribution(["CartPole-v1", "Acrobot-v1"])
    zeros = {500: 0.0, 1000: 0.0, 1500: 0.0}
    rungs = {f"completed_rung_{rung}": 0.0 for rung in range(4)}  # as successive halving would have left it
    study.add_trial(optuna.trial.create_trial(params={"env.id": "CartPole-v1"}, distributions={"env.id": envs},
                                              value=0.0, intermediate_values=zeros, system_attrs=rungs))  # fmt: skip
    done = search(
        project, ENVS, "hydra.sweeper.study_name=prune", "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1", "hydra.sweeper.seeds_per_trial=2", "hydra.sweeper.pruner_startup_trials=1",
        f"hydra.sweeper.pruner={pruner}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\nSearch run " in done.stdout and "Sweep run" not in done.stdout  # the last line names what ran
    state = {t.params["env.id"]: t for t in trials(project, "prune")[1:]}
    assert state["CartPole-v1"].state == TrialState.COMPLETE and state["Acrobot-v1"].state == TrialState.PRUNED
    assert state["Acrobot-v1"].user_attrs["pruned"]["step"] == 500

    client = MlflowClient(store)
    (parent,), children = split(runs_of(store))
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_jobs"] == "0"
    assert parent.data.tags["study_name"] == "prune" and parent.data.tags["pruner"] == pruner
    pruned = [c for c in children if c.data.tags["trial_number"] == str(state["Acrobot-v1"].number)]
    assert len(pruned) == 2 and {c.data.params["seed"] for c in pruned} == {"0", "1"}
    stopped = []
    for run in pruned:  # judged when both seeds reached 500: the last there stops at once; the other stops at its
        if run.info.status == "FINISHED":  # next evaluation, or, on a busy machine, may have run to its end first
            continue
        stopped.append(int(run.data.tags["pruned_at_step"]))
        assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
        assert f"pruned at step {stopped[-1]}: at step 500" in run.data.tags["end_reason"]
        evals = [m.step for m in client.get_metric_history(run.info.run_id, "eval_return_mean")]
        assert evals == list(range(500, stopped[-1] + 1, 500))  # it stopped at that evaluation
        assert "final_eval_return_mean" not in run.data.metrics
    assert min(stopped) == 500  # the decision waits for the last seed, which stops right there
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "search")} >= {
        "search/trials.csv", "search/trials.md", "search/optimization_history.png", "search/param_importances.png"
    }  # fmt: skip
    assert parent.data.tags["best_params"] == '{"env.id": "CartPole-v1"}'
    assert parent.data.params["best.env.id"] == "CartPole-v1"  # the pick in the UI's Parameters tab
    report = (Path(parent.data.tags["sweep_dir"]) / "report.md").read_text()
    pruned_table = report.split("Pruned runs (2, not counted as seeds)")[1]  # where each seed stopped
    rows = re.findall(r"\| \d+ +\| env.id=Acrobot-v1 +\| ([01]) +\| (\d+|-) +\|", pruned_table)
    assert "2 PRUNED" in report and sorted(seed for seed, _ in rows) == ["0", "1"]
    assert sorted(int(step) for _, step in rows if step != "-")[:1] == [500]  # as the runs' tags say, above
    assert "| env.id=CartPole-v1 " in report


# A tiny real LunarLander search: 4 trials of 2 seeds, 2 trials a batch on 2 joblib workers, TPE from the
# third trial on, the median pruner from the first COMPLETE trial on, judging at steps 500 to 2000.
TWICE = [
    "total_steps=2000", "learning_starts=300", "eval_every=500", "eval_episodes=2", "final_eval_episodes=2",
    "schedule.decay_steps=1500", "env.eval_max_episode_steps=100", "env.id=LunarLander-v3",
    "lr=tag(log, interval(1e-4, 3e-3))", "batch_size=choice(32, 64, 128)", "hydra.sweeper.n_trials=4",
    "hydra.sweeper.seeds_per_trial=2", "hydra.sweeper.n_startup_trials=2", "hydra.sweeper.pruner_startup_trials=1",
    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
]  # fmt: skip


def expected_cut(trial: optuna.trial.FrozenTrial, study: list[optuna.trial.FrozenTrial]) -> int | None:
    """Where the median rule cuts `trial`, computed here from the seeds' stored evaluations: at each step
    both seeds reached, the mean of their running means; cut at the first step where its best so far is
    below the median of the same value in the COMPLETE trials it is judged against."""

    def curve(t: optuna.trial.FrozenTrial) -> dict[int, float]:
        seeds = [{int(s): v for s, v in t.user_attrs[f"evals_seed_{seed}"].items()} for seed in (0, 1)]
        steps = sorted(set(seeds[0]) & set(seeds[1]))
        return {s: np.mean([np.mean([v for k, v in e.items() if k <= s]) for e in seeds]) for s in steps}

    against = [curve(t) for t in study if t.number in trial.user_attrs["judged_against"] and t.value is not None]
    best = -np.inf
    for step, value in curve(trial).items():
        best = max(best, value)
        others = [c[step] for c in against if step in c]
        if others and best < np.median(others):
            return step
    return None


@pytest.mark.slow
def test_the_same_search_twice_draws_the_same_trials_prunes_the_same_and_picks_the_same(tmp_path):
    """Two copies of one command run at once in two projects, so their workers' timings differ: the same
    params trial by trial, the same trials pruned at the same steps, the same pick, and each cut where the
    median rule, recomputed from the stored evaluations, puts it."""
    projects = [tmp_path / "a", tmp_path / "b"]
    for folder in projects:
        folder.mkdir()
    commands = [start(folder, *TWICE, log="search.log") for folder in projects]
    for folder, process in zip(projects, commands, strict=True):
        assert process.wait(timeout=900) == 0, (folder / "search.log").read_text()[-3000:]
    (name,) = {t.study_name for t in optuna.get_all_study_summaries(storage(projects[0]))}
    first, second = (trials(folder, name) for folder in projects)
    assert [t.params for t in first] == [t.params for t in second] and len(first) == 4
    assert [t.state for t in first] == [t.state for t in second]
    assert [t.user_attrs.get("pruned") for t in first] == [t.user_attrs.get("pruned") for t in second]
    assert [t.intermediate_values for t in first] == [t.intermediate_values for t in second]
    for t in first:
        assert (t.user_attrs.get("pruned") or {}).get("step") == expected_cut(t, first)
    assert [t.user_attrs["judged_against"] for t in first] == [[], [], [0, 1], [0, 1]]
    best = [max((t for t in found if t.value is not None and t.state == TrialState.COMPLETE), key=lambda t: t.value)
            for found in (first, second)]  # fmt: skip
    assert best[0].params == best[1].params
    answer = (projects[0] / "search.log").read_text()
    completed = sum(t.state == TrialState.COMPLETE for t in first)
    assert f"{completed} of 4 trials completed, {4 - completed} pruned" in answer


def storage_url(project: Path) -> str:
    (project / "mlruns").mkdir(exist_ok=True)
    return f"sqlite:///{project / 'mlruns' / 'optuna.db'}"


def reported(project: Path, name: str):
    """A RUNNING trial whose job has logged an evaluation: a job is mid-way."""
    try:
        running = [t for t in trials(project, name) if t.state == TrialState.RUNNING]
    except Exception:  # the study does not exist yet
        return None
    return [t for t in running if any(key.startswith("evals_seed_") for key in t.user_attrs)]


# Jobs long enough that one is still mid-way when the signal arrives, even on an idle machine.
RESUMABLE = [
    "lr=tag(log, interval(1e-4, 3e-3))", "hydra.sweeper.study_name=resume", "hydra.sweeper.n_trials=3",
    "hydra.sweeper.n_jobs=1", "hydra.sweeper.seeds_per_trial=1", "total_steps=12000",
]  # fmt: skip


@pytest.mark.slow
def test_a_stopped_or_killed_search_continues_with_the_same_command(project, store):
    """Ctrl-C to the process group, then SIGKILL to it, then the same command: it ends with the three
    trials asked for, each number once; the interrupted trials are FAIL, not counted, and run again."""
    first = start(project, *RESUMABLE, log="first.log")
    wait_until(lambda: reported(project, "resume"), 180, "a trial's job to evaluate", every=0.1)
    os.killpg(first.pid, signal.SIGINT)
    assert first.wait(timeout=180) == 130, (project / "first.log").read_text()[-3000:]
    (parent,), _ = split(runs_of(store))
    assert parent.info.status == "KILLED"

    second = start(project, *RESUMABLE, log="second.log")
    wait_until(lambda: reported(project, "resume"), 180, "a trial's job to evaluate again", every=0.1)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(timeout=60)

    done = search(project, *RESUMABLE)
    assert done.returncode == 0, done.stderr[-3000:]
    study = trials(project, "resume")
    numbers = [t.number for t in study]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state == TrialState.COMPLETE for t in study) == 3
    interrupted = [t for t in study if "interrupted" in t.user_attrs]
    assert len(interrupted) >= 2 and all(t.state == TrialState.FAIL for t in interrupted)
    reruns = {t.user_attrs["rerun_of"]: t for t in study if "rerun_of" in t.user_attrs}
    for lost in interrupted:  # each lost trial ran again once, with its params
        assert reruns[lost.number].params == lost.params
    assert len(reruns) == len(interrupted)

    (parent,), children = split(runs_of(store))  # one parent for the study, FINISHED by the last command
    assert parent.info.status == "FINISHED"
    assert not [c for c in children if c.info.status == "RUNNING"]  # the killed job's run was ended KILLED
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["trial_number"]) for c in finished) == sorted(
        t.number for t in study if t.state == TrialState.COMPLETE
    )


@pytest.mark.slow
def test_two_commands_on_one_study_share_it(project, store):
    """Started at once on one study: four trials in all, numbered 0 to 3, each trained once, one parent run."""
    # Sharing, not pruning: with the pruner on, a trial that falls behind ends PRUNED, not COMPLETE.
    args = ["batch_size=choice(32, 64, 128)", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=1", "hydra.sweeper.seeds_per_trial=1", "hydra.sweeper.sampler=random",
            "hydra.sweeper.pruner=none"]  # fmt: skip
    commands = [start(project, *args, log=f"{i}.log") for i in range(2)]
    for i, process in enumerate(commands):
        assert process.wait(timeout=600) == 0, (project / f"{i}.log").read_text()[-3000:]
    study = trials(project, "shared")
    assert sorted(t.number for t in study) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in study)
    (parent,), children = split(runs_of(store))
    assert sorted(int(c.data.tags["trial_number"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags["sweep_id"] for c in children} == {parent.data.tags["sweep_id"]}
    assert len({Path(c.data.tags["output_dir"]).parent for c in children}) == 2  # both commands ran trials


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hydra.sweeper.sampler=cmaes", "lr=interval(1e-4, 1e-3)"], "hydra.sweeper.sampler=cmaes is invalid"),
        (["hydra.sweeper.pruner=hyperband", "lr=interval(1e-4, 1e-3)"], "hydra.sweeper.pruner=hyperband is invalid"),
        ([], "hydra.sweeper.params is empty"),
        (["hydra.sweeper.n_trials=0", "lr=interval(1e-4, 1e-3)"], "hydra.sweeper.n_trials=0 is invalid"),
        (["hydra.sweeper.seeds_per_trial=0", "lr=interval(1e-4, 1e-3)"], "hydra.sweeper.seeds_per_trial=0 is invalid"),
        (["lr=interval(0, 1e-3)"], "reaches lr=0.0 is invalid: allowed a float > 0"),
        (["hydra.sweeper.sampler_seed=-1", "lr=interval(1e-4, 1e-3)"], "hydra.sweeper.sampler_seed=-1 is invalid"),
    ],
)
@pytest.mark.slow
def test_a_bad_search_is_refused_in_one_line_before_any_run(project, store, args, message):
    done = search(project, *args, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr[-2000:]
    assert split(runs_of(store)) == ([], [])


def test_each_registered_sampler_and_pruner_is_accepted_and_builds_its_optuna_part():
    """A sampler or pruner is its registry entry, built into the Optuna part it names."""
    grid = {"lr": [1e-4, 1e-3]}
    for name, make in SAMPLERS.items():
        assert isinstance(make(SearchConfig(sampler=name), grid, 0), optuna.samplers.BaseSampler)
    for name in PRUNERS:
        spec = {"kind": name, "n_startup_trials": 1, "n_warmup_steps": 0}
        assert isinstance(make_pruner(spec), optuna.pruners.BasePruner)
