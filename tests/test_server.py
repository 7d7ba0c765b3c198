"""Sweeps tracked by a real MLflow server on PostgreSQL (marker `postgres`; the SLURM one also `slurm`)."""

import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import runs_of
from tests.services import clean_env, postgres_server, postgres_uri, slurm_cluster  # noqa: F401 (fixtures)
from tests.test_slurm import SLURM
from tests.test_sweep import assert_complete_job, split, sweep

ARTIFACTS = {"config.yaml", "lunar-dqn.pth", "learning_curve.png", "checkpoint/checkpoint.pt"}


def artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    """Every file under the run's artifacts, recursively."""
    paths = set()
    for entry in client.list_artifacts(run_id, folder):
        paths |= artifact_paths(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return paths


def sweep_on_server(project: Path, server: str, *args: str):
    """Run a sweep into its own experiment on the shared server; return its parent and child runs."""
    experiment = f"test-{uuid.uuid4().hex[:8]}"
    done = sweep(project, *args, env=clean_env(MLFLOW_TRACKING_URI=server, MLFLOW_EXPERIMENT_NAME=experiment))
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (project / "mlruns").exists(), "everything goes to the server"
    return split(runs_of(server, experiment))


def assert_read_back(client: MlflowClient, child, tmp_path: Path) -> None:
    """A job's whole history and its artifacts, as stored by the server, readable again."""
    assert_complete_job(client, child)
    assert artifact_paths(client, child.info.run_id) >= ARTIFACTS
    config = client.download_artifacts(child.info.run_id, "config.yaml", str(tmp_path / child.info.run_id))
    assert str(yaml.safe_load(Path(config).read_text())["seed"]) == child.data.params["seed"]


@pytest.mark.postgres
def test_four_parallel_jobs_on_a_postgres_server_keep_every_metric_and_artifact(project, postgres_server, tmp_path):  # noqa: F811
    (parent,), children = sweep_on_server(
        project, postgres_server, "seed=0,1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_jobs"] == "0"
    assert len(children) == 4 and {c.data.params["seed"] for c in children} == {"0", "1", "2", "3"}
    client = MlflowClient(postgres_server)
    for child in children:
        assert_read_back(client, child, tmp_path)
    assert {"report.md", "report.csv"} <= artifact_paths(client, parent.info.run_id)


@pytest.mark.slurm
@pytest.mark.postgres
def test_slurm_jobs_report_to_the_postgres_server(project, slurm_cluster, postgres_server, tmp_path):  # noqa: F811
    (parent,), children = sweep_on_server(project, postgres_server, "seed=0,1", *SLURM)
    assert parent.info.status == "FINISHED" and len(children) == 2
    client = MlflowClient(postgres_server)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert_read_back(client, child, tmp_path)
