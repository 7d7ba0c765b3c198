"""Shared fixtures: real Hydra configs composed into a temporary directory, a real MLflow store there."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from omegaconf import DictConfig, open_dict

from dqn.config import register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "src" / "dqn" / "conf"

# Small and quick, but the real env, network, buffer and store.
TINY = [
    "total_steps=3000",
    "learning_starts=500",
    "eval_every=1500",
    "eval_episodes=2",
    "final_eval_episodes=2",
    "env.eval_max_episode_steps=200",
    "network=mlp_small",
    "schedule.decay_steps=2000",
]


def compose_config(overrides: list[str], out_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as `python -m dqn.train` would, with Hydra's runtime pointed at out_dir."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        del cfg["hydra"]  # the task function never sees it
    return cfg


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary project root as cwd, with no tracking variables leaking in from the shell."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return tmp_path


@pytest.fixture
def store(project: Path) -> str:
    """The default embedded store's URI inside the temporary project."""
    return f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"


def runs_of(uri: str, experiment: str = "dqn-lunar-lander") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs SLURM or PostgreSQL is in the full tier (`make test-all`), never the newcomer's."""
    for item in items:
        if item.get_closest_marker("slurm") or item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.slow)
