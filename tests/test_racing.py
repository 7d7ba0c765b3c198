"""Racing (`dqn.racing`): the elimination test against exact enumeration, races on simulated arms, and a real
race through Hydra's joblib launcher into a real MLflow store."""

import itertools
import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow import MlflowClient

from dqn.config import ConfigError, RaceConfig, register_configs
from dqn.racing.elimination import (
    BUDGET,
    MAX_SEEDS,
    SEPARATED,
    STOPPED,
    Rules,
    eliminate,
    gap_p_values,
    run_race,
    within_seed_ranks,
)
from dqn.racing.plan import check_race, check_rules, grid
from tests.conftest import CONF_DIR, runs_of
from tests.services import clean_env


def brute_force_p(scores: np.ndarray) -> np.ndarray:
    """The gap p-values by enumerating every relabelling of the configs within each seed."""
    ranks = within_seed_ranks(scores)
    means = ranks.mean(axis=0)
    ranges = []
    for perms in itertools.product(itertools.permutations(range(ranks.shape[1])), repeat=ranks.shape[0]):
        shuffled = np.array([row[list(p)] for row, p in zip(ranks, perms, strict=True)]).mean(axis=0)
        ranges.append(shuffled.max() - shuffled.min())
    ranges = np.array(ranges)
    return np.array([(ranges >= means.max() - m - 1e-9).mean() for m in means])


def test_a_failed_job_ranks_below_every_score_of_its_seed_and_ties_share_a_rank():
    ranks = within_seed_ranks(np.array([[5.0, np.nan, 5.0, -300.0]]))
    assert ranks.tolist() == [[3.5, 1.0, 3.5, 2.0]]


@pytest.mark.parametrize(
    "scores",
    [
        [[3, 2, 1], [3, 1, 2], [2, 3, 1]],  # 3 configs, 3 seeds: 216 relabellings
        [[1, 5, 9], [4, 4, 0], [7, 2, 2]],  # ties within a seed
        [[1, 0], [1, 0], [1, 0], [0, 1], [1, 0], [1, 0]],  # 2 configs: the sign test, 64 relabellings
    ],
)
def test_gap_p_values_match_exact_enumeration(scores):
    scores = np.array(scores, dtype=float)
    assert np.allclose(gap_p_values(scores)[1], brute_force_p(scores))


def test_two_configs_need_six_seeds_to_separate():
    """As a paired sign test: one config winning every seed has p = 2/2^n, first below 0.05 at n = 6."""
    for n in range(2, 8):
        scores = np.column_stack([np.ones(n), np.zeros(n)])
        assert gap_p_values(scores)[1][1] == pytest.approx(2 / 2**n)
        assert bool(eliminate(scores, [0, 1], 0.05)[1]) == (n >= 6)


def test_each_rounds_test_holds_its_level_under_the_null():
    """Four equal configs, 5 seeds: the share of draws where some config is dropped stays at alpha."""
    rng = np.random.default_rng(7)
    draws = 300
    dropped = sum(bool(eliminate(rng.normal(size=(5, 4)), range(4), 0.05)[1]) for _ in range(draws))
    assert dropped / draws <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws)


def arms(means: list[float], noise: list[float], seed: int):
    """Simulated configs: config c's score on seed s is means[c] + a seed effect + its own noise."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(scale=50, size=100)
    own = rng.normal(size=(100, len(means)))
    asked: list[tuple[int, int]] = []

    def score(jobs):
        asked.extend(jobs)
        return [means[c] + effect[s] + noise[c] * own[s, c] for c, s in jobs]

    return score, asked


@pytest.mark.parametrize("seed", range(8))
def test_a_clearly_worse_config_is_dropped_in_round_one_and_gets_no_more_seeds(seed):
    """Config 2 is last on every seed; whatever the order of the other two, 5 seeds drop it (worst case
    p = 0.039, enumerated above), and the contenders go on to max_seeds."""
    score, asked = arms([0.0, 0.0, -1000.0], [10.0, 10.0, 1.0], seed)
    race = run_race(3, Rules(first_seeds=5, max_seeds=9, alpha=0.05), score)
    (drop,) = [d for d in race.drops if d.config == 2]
    assert drop.round == 1 and drop.seeds == 5
    assert race.seeds_of(2) == 5 and race.seeds_of(0) > 5 and race.seeds_of(1) > 5
    assert Counter(asked).most_common(1)[0][1] == 1  # no (config, seed) asked twice
    assert race.ended in (MAX_SEEDS, SEPARATED)


def test_equal_configs_keep_getting_seeds_until_the_budget():
    """Configs tied on every seed are never separated: all of them run until the budget is spent, which
    is never exceeded (16 jobs: 4 configs x 3 seeds, then one more round of 4; a third would need 20)."""
    score, asked = arms([0.0] * 4, [0.0] * 4, 0)
    race = run_race(4, Rules(first_seeds=3, max_seeds=10, seed_budget=18), score)
    assert race.ended == BUDGET and race.drops == () and race.alive == (0, 1, 2, 3)
    assert len(asked) == len(set(asked)) == 16
    assert [race.seeds_of(c) for c in range(4)] == [4, 4, 4, 4]


def test_a_stopped_race_starts_no_round_after_the_one_that_was_stopped_and_counts_none_of_it():
    score, asked = arms([0.0] * 3, [10.0] * 3, 1)
    race = run_race(3, Rules(first_seeds=2, max_seeds=6), score, stopping=lambda: len(asked) > 6)
    assert race.ended == STOPPED
    assert len(asked) == 3 * 2 + 3  # the first round, then the round that was stopped; nothing after
    assert sorted(race.scores) == sorted(asked[:6]) and race.rounds == 1


@pytest.mark.parametrize(
    ("rules", "configs"),
    [
        (Rules(first_seeds=2, seeds_per_round=3, max_seeds=12, seed_budget=31), 5),
        (Rules(first_seeds=3, seeds_per_round=2, max_seeds=7, seed_budget=None), 6),
        (Rules(first_seeds=4, seeds_per_round=1, max_seeds=20, seed_budget=40, alpha=0.2), 3),
    ],
)
def test_the_budget_is_never_exceeded_and_survivors_share_their_seeds(rules, configs):
    score, asked = arms([float(-10 * c) for c in range(configs)], [20.0] * configs, 3)
    race = run_race(configs, rules, score)
    assert len(asked) == len(set(asked)) <= rules.budget(configs)
    assert len({race.seeds_of(c) for c in race.alive}) == 1  # survivors are complete blocks
    assert all(race.seeds_of(c) <= rules.max_seeds for c in range(configs))
    for drop in race.drops:  # a dropped config ran nothing after its round
        assert race.seeds_of(drop.config) == drop.seeds


def race_command(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dqn.train", "-m", "hydra/sweeper=race", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lr=1e-4,1e-3", "hydra.sweeper.alpha=2"], "hydra.sweeper.alpha=2.0 is invalid: allowed a float in (0, 1)"),
        (["batch_size=0,64"], "race config batch_size=0 seed=0 reaches batch_size=0 is invalid: allowed an integer"),
    ],
)
@pytest.mark.slow
def test_a_bad_race_is_refused_in_one_line_before_any_run(project, store, args, message):
    done = race_command(project, *args)
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line
    assert runs_of(store) == []


@pytest.mark.parametrize(
    ("params", "arguments", "message"),
    [
        ({"lr": "1e-4,1e-3"}, ["seed=0,1"], "hydra.sweeper.params.seed=0,1 is invalid: allowed no seed sweep"),
        ({"lr": "interval(1e-4, 1e-3)"}, [], "hydra.sweeper.params.lr=interval(1e-4, 1e-3) is invalid: allowed a list"),
        ({}, ["lr=1e-4"], "hydra.sweeper.params={} is invalid: allowed a grid of at least 2 configs"),
    ],
)
def test_a_grid_that_is_not_one_is_refused(params, arguments, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        grid(params, arguments)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (RaceConfig(first_seeds=0), "hydra.sweeper.first_seeds=0 is invalid: allowed an integer >= 1"),
        (RaceConfig(first_seeds=4, max_seeds=3), "hydra.sweeper.max_seeds=3 is invalid: allowed an integer >= first"),
        (RaceConfig(alpha=0.0), "hydra.sweeper.alpha=0.0 is invalid: allowed a float in (0, 1)"),
    ],
)
def test_bad_rules_are_refused(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_rules(settings)


def test_the_grid_is_the_product_of_the_sweeps_and_the_rest_is_shared():
    configs, fixed = grid({"lr": "1e-4,1e-3", "gamma": "0.9"}, ["batch_size=choice(32, 64)", "total_steps=500"])
    assert configs == [
        ["lr=0.0001", "batch_size=32"],
        ["lr=0.0001", "batch_size=64"],
        ["lr=0.001", "batch_size=32"],
        ["lr=0.001", "batch_size=64"],
    ]
    assert fixed == ["gamma=0.9", "total_steps=500"]


# CartPole, so that a config is worse by construction: its evaluation episodes are cut at 4 steps, and no
# CartPole episode ends before 8, so it scores 4 on every seed and ranks last within each; the two others
# (cut at 400 and 500) score more. At alpha 0.2, 3 seeds drop it whatever the order of the two others
# (p = 0.028 or 0.194 by enumeration; 0.111 when they tie, as they do: an agent trained for 300 steps never
# reaches 400 steps), and the two others run on to max_seeds = 4: 11 jobs.
CARTPOLE = [
    "env.id=CartPole-v1",
    "env.max_episode_steps=200",
    "total_steps=300",
    "learning_starts=100",
    "eval_every=0",
    "eval_episodes=0",
    "final_eval_episodes=3",
    "network=mlp_small",
    "checkpoint_every=0",
    "mlflow.log_model=false",
    "env.eval_max_episode_steps=4,400,500",
    "hydra.sweeper.first_seeds=3",
    "hydra.sweeper.max_seeds=4",
    "hydra.sweeper.alpha=0.2",
]


@pytest.mark.slow
def test_a_real_race_gives_seeds_to_the_contenders_under_one_parent_and_continues(project, store):
    done = race_command(project, *CARTPOLE, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(store)
    (parent,) = [r for r in runs if r.data.tags.get("dqn.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("dqn.role") == "job"]
    assert parent.info.status == "FINISHED" and {c.data.tags["mlflow.parentRunId"] for c in children} == {
        parent.info.run_id
    }
    jobs = Counter((c.data.tags["group"], int(c.data.params["seed"])) for c in children)
    assert max(jobs.values()) == 1  # no (config, seed) ran twice
    seeds = Counter(group for group, _ in jobs)
    worse = "env.eval_max_episode_steps=4"
    assert seeds == {worse: 3, "env.eval_max_episode_steps=400": 4, "env.eval_max_episode_steps=500": 4}
    tags = parent.data.tags
    assert tags["race_eliminated"].startswith(f"{worse}: round 1 at 3 seeds") and tags["race_end"] == MAX_SEEDS
    assert json.loads(tags["race_seeds"]) == dict(seeds) and tags["race_jobs"] == "11"
    client = MlflowClient(store)
    assert {"race.csv", "report.md", "report.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert f"| {worse} " in (Path(tags["sweep_dir"]) / "report.md").read_text()

    again = race_command(project, *CARTPOLE)  # the same race, run again: its parent continues, nothing reruns
    assert again.returncode == 0, again.stderr[-3000:]
    assert "11 of its jobs already finished" in again.stdout
    runs = runs_of(store)
    assert len(runs) == len(children) + 1 and {r.info.run_id for r in runs if r.data.tags["dqn.role"] == "sweep"} == {
        parent.info.run_id
    }
    assert MlflowClient(store).get_run(parent.info.run_id).data.tags["race_end"] == MAX_SEEDS


@pytest.mark.slow
def test_a_signalled_race_ends_killed_and_the_same_command_continues_it(project, store):
    """SIGINT during round 2's first job: that job ends KILLED, the round's other job is skipped, the parent
    ends KILLED; the same command reuses round 1's six jobs, runs round 2's two, and ends the same parent."""
    longer = [o if o != "total_steps=300" else "total_steps=3000" for o in CARTPOLE[:-3]]  # round 2 is caught running
    rules = ["hydra.sweeper.first_seeds=2", "hydra.sweeper.max_seeds=3", "hydra.sweeper.alpha=0.5"]
    args = [sys.executable, "-m", "dqn.train", "-m", "hydra/sweeper=race", *longer, *rules]
    race = subprocess.Popen(
        args, cwd=project, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = ""
    for line in race.stdout:  # round 1 tested (alpha 0.5 drops the capped config at 2 seeds), round 2 started
        seen += line
        if "race round 1" in seen and "(s2 emes400) tracked" in line:  # the run name: seed 2, eval cap 400
            race.send_signal(signal.SIGINT)
            break
    race.communicate(timeout=600)
    assert race.returncode == 130, seen[-3000:]
    (parent,) = [r for r in runs_of(store) if r.data.tags.get("dqn.role") == "sweep"]
    assert parent.info.status == "KILLED" and parent.data.tags["race_end"] == "stopped"

    again = race_command(project, *args[5:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 of its jobs already finished" in again.stdout
    runs = runs_of(store)
    assert [r.info.run_id for r in runs if r.data.tags["dqn.role"] == "sweep"] == [parent.info.run_id]
    finished = Counter(
        (r.data.tags["group"], r.data.params["seed"])
        for r in runs
        if r.data.tags["dqn.role"] == "job" and r.info.status == "FINISHED"
    )
    assert max(finished.values()) == 1 and len(finished) == 8
    assert Counter(group for group, _ in finished) == {
        "env.eval_max_episode_steps=4": 2, "env.eval_max_episode_steps=400": 3, "env.eval_max_episode_steps=500": 3
    }  # fmt: skip
    assert MlflowClient(store).get_run(parent.info.run_id).info.status == "FINISHED"


def planned(overrides: list[str]):
    """check_race on `python -m dqn.train <overrides>` as composed by Hydra, with Hydra's own loader."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        return check_race(cfg, GlobalHydra.instance().config_loader(), list(cfg.hydra.overrides.task))


def test_the_ready_race_is_the_grids_question_and_a_race_is_known_by_what_its_jobs_train():
    plan = planned(["sweep=local_optimum_race"])
    assert len(plan.configs) == 9 and plan.configs[0] == ["batch_size=64", "lr=0.0001"]
    assert (plan.rules.first_seeds, plan.rules.max_seeds, plan.rules.budget(9)) == (3, 10, 45)
    assert plan.job(8, 2) == ["sweep=local_optimum_race", "batch_size=256", "lr=0.001", "seed=2"]  # as a grid passes it
    same = planned(["sweep=local_optimum_race", "mlflow.experiment_name=elsewhere", "hydra.sweeper.seed_budget=90"])
    assert same.signature == plan.signature  # where it is tracked and how many seeds it may spend: the same race
    assert planned(["sweep=local_optimum_race", "total_steps=30000"]).signature != plan.signature
