"""End to end: real configs, the real LunarLander, a real MLflow store in a temporary project."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from dqn.buffer import ExperienceBuffer
from dqn.cli.train import train
from tests.conftest import TINY, compose_config, runs_of

ROOT = Path(__file__).resolve().parents[1]


def train_tiny(project: Path, *overrides: str, name: str = "job") -> float | None:
    return train(compose_config(TINY + list(overrides), project / "runs" / name))


def test_training_records_a_complete_run(project, store):
    final = train_tiny(project, "seed=1")
    (run,) = runs_of(store)
    client = MlflowClient(store)
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["batch_size"] == "128" and params["seed"] == "1" and params["env.id"] == "LunarLander-v3"
    assert params["network.hidden_sizes"] == "[64, 64]" and params["schedule.kind"] == "linear"
    assert run.data.tags["hydra_overrides"].split() == TINY + ["seed=1"]
    assert run.info.run_name.startswith("s1 ") and "git_commit" in run.data.tags  # the seed first

    def history(key):
        metrics = client.get_metric_history(run.info.run_id, key)
        return [(m.step, m.value) for m in sorted(metrics, key=lambda m: m.step)]

    returns, lengths = history("episode_return"), history("episode_length")
    assert len(returns) == len(lengths) == len(history("epsilon")) >= 5
    # logged at MLflow step = env steps so far: the steps advance by each episode's length
    steps = [s for s, _ in lengths]
    assert steps == list(np.cumsum([v for _, v in lengths]).astype(int))
    assert all(v <= 1000 for _, v in lengths)  # the training cap
    eps = [v for _, v in history("epsilon")]
    assert eps[0] > eps[-1] and eps[-1] == pytest.approx(0.05)
    losses = history("loss")
    assert losses and all(s > 500 for s, _ in losses)  # no updates before learning_starts
    assert [s for s, _ in history("eval_return_mean")] == [1500, 3000]
    assert len(history("eval_return_std")) == 2 and history("steps_per_second")
    evals = [v for _, v in history("eval_return_mean")]
    assert max(evals) == history("best_eval_return_mean")[-1][1]  # keep_best: the delivered weights' selection score
    assert final == history("final_eval_return_mean")[-1][1]  # the sweep objective: their fresh, unbiased score

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "lunar-dqn.pth", "learning_curve.png"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "learning_curve.png", str(project)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (project / "runs" / "job" / "config.yaml").read_text().count("batch_size: 128") == 1


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers(project, store):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        train_tiny(project, f"seed={seed}", "mlflow.experiment_name=det", name=name)
    client = MlflowClient(store)
    histories = [
        [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "episode_return")]
        for run in runs_of(store, "det")
    ]
    assert histories[0] == histories[1]
    assert histories[0] != histories[2]
    losses = [
        [m.value for m in client.get_metric_history(run.info.run_id, "loss")] for run in runs_of(store, "det")[:2]
    ]
    assert losses[0] == losses[1]


def test_truncation_bootstraps_but_termination_does_not(project, store, monkeypatch):
    """With a 20-step cap every training episode is truncated; none may be stored as done."""
    stored = []
    original = ExperienceBuffer.append

    def spy(self, observation, action, reward, next_observation, done):
        stored.append(done)
        original(self, observation, action, reward, next_observation, done)

    monkeypatch.setattr(ExperienceBuffer, "append", spy)
    train_tiny(project, "env.max_episode_steps=20", "total_steps=400", "learning_starts=100", "n_step=1")
    assert len(stored) == 400
    lengths = MlflowClient(store).get_metric_history(runs_of(store)[0].info.run_id, "episode_length")
    truncated_episodes = sum(m.value == 20 for m in lengths)
    assert truncated_episodes >= 10
    assert sum(stored) == len(lengths) - truncated_episodes  # only real crashes/landings are terminal


@pytest.mark.slow
def test_max_time_budget_stops_training(project, store):
    train_tiny(project, "total_steps=null", "max_time=2", "eval_every=0")
    (run,) = runs_of(store)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train_seconds"] >= 2  # it ran until the time budget, which alone stopped it


@pytest.mark.slow
def test_cli_trains_and_refuses_bad_input(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    ok = subprocess.run(
        [sys.executable, "-m", "dqn.train", *TINY, "total_steps=600", "eval_every=0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert (
        "step 600/600 (100%)" in ok.stdout and "env steps/s" in ok.stdout
    )  # piped: a status line, at least at the end
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert [r.info.status for r in runs_of(store)] == ["FINISHED"]
    assert list((tmp_path / "runs").glob("*/*/lunar-dqn.pth"))

    bad = subprocess.run(
        [sys.executable, "-m", "dqn.train", "batch_size=0"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: batch_size=0 is invalid: allowed an integer >= 1"
    assert len(runs_of(store)) == 1  # no run was started for it


@pytest.mark.slow
def test_final_model_is_logged_loadable_and_registered_on_request(project, store):
    import mlflow

    train_tiny(project, "total_steps=600", "eval_every=0", "register=true", "mlflow.registered_model_name=lander")
    (run,) = runs_of(store)
    client = MlflowClient(store)
    (version,) = client.search_model_versions("name='lander'")
    assert str(version.version) == "1" and version.run_id == run.info.run_id
    mlflow.set_tracking_uri(store)
    try:
        model = mlflow.pyfunc.load_model("models:/lander/1")
        q_values = model.predict(np.zeros((3, 8), dtype=np.float32))
    finally:
        mlflow.set_tracking_uri(None)
    assert np.asarray(q_values).shape == (3, 4)


def test_help_gives_every_key_with_its_default_and_meaning(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "dqn.train", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert "network: mlp, mlp_medium, mlp_small" in done.stdout
    assert "  batch_size = 128\n      Transitions per gradient step." in done.stdout
    assert "  schedule.kind = linear (constant | linear | exponential)" in done.stdout
    assert "  mlflow.tracking_uri = null\n      null: $MLFLOW_TRACKING_URI" in done.stdout  # a base class's keys too
    assert "trial." not in done.stdout  # a search sets these for its jobs; not a user's key
    keys = re.findall(r"^  ([a-z_.]+) = .*\n(?!      )", done.stdout, re.MULTILINE)
    assert keys == []  # every key has its meaning under it
