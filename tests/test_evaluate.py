"""The evaluation entrypoint, the episode video and the MLflow model, on the real env, encoder and store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import mlflow
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch
from gymnasium.envs.box2d.lunar_lander import heuristic
from mlflow import MlflowClient

from dqn.cli.evaluate import (
    WEIGHTS,
    EvaluateConfig,
    EvaluationError,
    TrackingConfig,
    evaluate_command,
    evaluate_weights,
    report,
)
from dqn.environment import make_env
from dqn.estimator import ActionValueEstimator
from dqn.policy import evaluate_episodes, outcome, summarize_episodes
from dqn.tracking.models import log_model
from dqn.tracking.store import open_experiment
from dqn.video import record_episode

NOOP, MAIN_ENGINE = 0, 2


def forced(action: int) -> ActionValueEstimator:
    """A small estimator whose Q-values are a constant with `action` on top: it always takes `action`."""
    estimator = ActionValueEstimator(make_env("LunarLander-v3"), hidden_sizes=(16,))
    with torch.no_grad():
        head = estimator.network[-1]
        head.weight.zero_()
        head.bias.zero_()
        head.bias[action] = 1.0
    return estimator


class Pilot:
    """gymnasium's hand-written LunarLander controller in the estimator's place: it lands."""

    def __init__(self, env) -> None:
        self.env = env

    def greedy_action(self, observation) -> int:
        return int(heuristic(self.env.unwrapped, observation))


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "dqn.cli.evaluate", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def saved_weights(path: Path) -> Path:
    ActionValueEstimator(make_env("LunarLander-v3"), hidden_sizes=(16, 16)).save_weights(path)
    return path


@pytest.fixture(scope="module")
def episodes() -> dict[str, list]:
    """Real episodes of each kind: do nothing (falls), main engine under a 15-step limit, the heuristic pilot."""
    env = make_env("LunarLander-v3")
    capped = make_env("LunarLander-v3", max_episode_steps=15)
    return {
        "crashed": evaluate_episodes(forced(NOOP), env, 2, seed=0),
        "timed_out": evaluate_episodes(forced(MAIN_ENGINE), capped, 2, seed=0),
        "landed": evaluate_episodes(Pilot(env), env, 2, seed=0),
    }


def test_outcomes_of_real_episodes(episodes):
    for kind, played in episodes.items():
        assert [outcome(e) for e in played] == [kind, kind]
    assert all(e.last_reward == -100 for e in episodes["crashed"])
    assert all(e.length == 15 and e.truncated for e in episodes["timed_out"])


def test_summary_matches_the_episodes(episodes):
    played = [e for kind in ("crashed", "timed_out", "landed") for e in episodes[kind]]
    returns = np.array([e.score for e in played])
    summary = summarize_episodes(played)
    assert summary.episodes == 6
    assert summary.return_mean == pytest.approx(returns.mean())
    assert summary.return_std == pytest.approx(np.sqrt(np.sum((returns - returns.mean()) ** 2) / 5))  # sample std
    assert (summary.return_min, summary.return_max) == (returns.min(), returns.max())
    assert summary.success_rate == pytest.approx(np.sum(returns >= 200) / 6)  # a share of episodes
    assert (summary.landed, summary.crashed, summary.timed_out) == pytest.approx((2 / 6, 2 / 6, 2 / 6))
    assert summary.length_mean == pytest.approx(np.mean([e.length for e in played]))
    assert set(summary.metrics("evaluate_")) == {
        f"evaluate_{k}"
        for k in ("episodes", "return_mean", "return_std", "return_min", "return_max", "success_rate")
        + ("length_mean", "landed", "crashed", "timed_out")
    }


@pytest.mark.parametrize("key", ["weights", "checkpoint"])  # checkpoint: the key's old name, still accepted
def test_cli_evaluates_a_weights_file_and_prints_the_summary(tmp_path, key):
    weights = saved_weights(tmp_path / "lunar-dqn.pth")
    done = cli(tmp_path, f"{key}={weights}", "episodes=3", "max_episode_steps=200")
    assert done.returncode == 0, done.stderr
    _, played = evaluate_weights(weights, "LunarLander-v3", 3, seed=0, max_episode_steps=200)
    expected = report(summarize_episodes(played), "", 200).splitlines()[1:]
    assert all(line in done.stdout for line in expected), done.stdout
    assert not (tmp_path / "mlruns").exists()  # a weights file is evaluated without touching MLflow
    (log,) = tmp_path.glob("runs/evaluate/*/*/evaluate.log")  # where the README says outputs go
    assert all(line in log.read_text() for line in expected) and f"outputs in {log.parent}" in log.read_text()
    assert done.stdout.count(expected[0]) == 1  # printed once, not also through the log's console handler


def test_help_lists_only_the_commands_own_keys(tmp_path):
    done = cli(tmp_path, "--help")
    assert done.returncode == 0 and "  video_episodes = 1\n      How many of the episodes to film" in done.stdout
    assert "network" not in done.stdout and "Config groups" not in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["weights=x.pth", "seed=-1"], "seed=-1 is invalid"),
        (["weights=x.pth", "env_id=Pendulum-v1"], "env_id=Pendulum-v1 is invalid: allowed an env with discrete"),
        (["weights=x.pth", "env_id=NoSuchEnv-v0"], "env_id=NoSuchEnv-v0 is invalid: allowed a registered gymnasium"),
        (["weights=x.pth", "video_episodes=3", "episodes=2"], "video_episodes=3 is invalid: allowed an integer in"),
        (["weights=x.pth", "checkpoint=x.pth"], "weights= and checkpoint= are one key"),
    ],
)
def test_cli_refuses_bad_values_in_one_line(tmp_path, args, message):
    done = cli(tmp_path, *args)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {done.stderr.strip()[7:]}"
    assert message in done.stderr and "\n" not in done.stderr.strip()


@pytest.mark.parametrize("args", [["episodes=2"], ["weights=x.pth", "run_id=abc"]], ids=["neither", "both"])
def test_cli_wants_exactly_one_of_run_id_and_weights(tmp_path, args):
    done = cli(tmp_path, *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "run_id" in done.stderr and "weights" in done.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for this module (creating its tables takes seconds); each test has its own experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def new_run(store: str, request: pytest.FixtureRequest) -> tuple[MlflowClient, str]:
    """A RUNNING run in an experiment named after the test, artifacts beside the store as training has them."""
    client, experiment_id = open_experiment(store, request.node.name)
    return client, client.create_run(experiment_id).info.run_id


@pytest.mark.slow
def test_evaluating_a_run_logs_evaluate_metrics_and_the_video(store, project, request):
    client, run_id = new_run(store, request)
    client.log_artifact(run_id, str(saved_weights(project / WEIGHTS)))
    client.set_terminated(run_id, "FINISHED")
    before = client.get_run(run_id).info
    settings = EvaluateConfig(
        run_id=run_id,
        episodes=3,
        max_episode_steps=30,
        video=True,
        video_episodes=2,
        mlflow=TrackingConfig(tracking_uri=store),
    )
    summary = evaluate_command(settings, project / "out")
    after = client.get_run(run_id)
    assert {k: v for k, v in after.data.metrics.items() if k.startswith("evaluate_")} == pytest.approx(
        summary.metrics("evaluate_")
    )
    assert after.data.metrics["evaluate_episodes"] == 3
    assert after.data.tags["evaluate_time_limit"] == "30"
    assert not any(k.startswith("final_eval_") for k in after.data.metrics)  # training's own, not this
    filmed = [a.path for a in client.list_artifacts(run_id, "videos")]
    assert filmed == ["videos/lunar-dqn-seed0.mp4", "videos/lunar-dqn-seed1.mp4"]  # the first video_episodes
    assert (after.info.status, after.info.end_time) == (before.status, before.end_time)


def test_a_missing_run_or_file_is_refused_by_name(store, project):
    with pytest.raises(EvaluationError, match="run_id=0123abc: no such run"):
        evaluate_command(EvaluateConfig(run_id="0123abc", mlflow=TrackingConfig(tracking_uri=store)), project)
    with pytest.raises(EvaluationError, match="weights=missing.pth: no such file"):
        evaluate_command(EvaluateConfig(weights="missing.pth"), project)


@pytest.mark.slow
def test_video_decodes_to_the_frames_it_reports(tmp_path):
    path = tmp_path / "episode.mp4"
    episode, frames = record_episode(forced(MAIN_ENGINE), "LunarLander-v3", 0, path, max_episode_steps=30)
    assert (episode.length, episode.truncated, frames) == (30, True, 31)
    with imageio.get_reader(path) as reader:
        decoded = [frame for frame in reader.iter_data()]  # list(reader) would ask its length: unknown, inf
    assert len(decoded) == frames
    assert decoded[0].shape == (400, 600, 3)  # not rescaled to a multiple of 16


@pytest.mark.slow
def test_logged_model_loads_back_and_predicts_the_same(store, request, monkeypatch):
    client, run_id = new_run(store, request)
    estimator = ActionValueEstimator(make_env("LunarLander-v3"), hidden_sizes=(32, 32))
    uri = log_model(store, run_id, estimator)
    assert client.get_run(run_id).info.status == "RUNNING" and mlflow.active_run() is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    observations = np.random.default_rng(1).standard_normal((7, 8)).astype(np.float32)
    expected = estimator.predict(observations)
    with torch.no_grad():
        np.testing.assert_allclose(mlflow.pytorch.load_model(uri)(torch.as_tensor(observations)).numpy(), expected)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(uri).predict(observations), expected)
    (model,) = client.search_logged_models([client.get_run(run_id).info.experiment_id])
    assert (model.name, model.source_run_id, model.status.name) == ("model", run_id, "READY")


@pytest.mark.slow
def test_registered_model_gets_version_1(store, request, monkeypatch):
    client, run_id = new_run(store, request)
    estimator = ActionValueEstimator(make_env("LunarLander-v3"), hidden_sizes=(8,))
    assert log_model(store, run_id, estimator, registered_name="lunar-dqn") == "models:/lunar-dqn/1"
    assert client.get_model_version("lunar-dqn", "1").run_id == run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    observations = np.zeros((2, 8), dtype=np.float32)
    loaded = mlflow.pyfunc.load_model("models:/lunar-dqn/1")
    np.testing.assert_allclose(loaded.predict(observations), estimator.predict(observations))
