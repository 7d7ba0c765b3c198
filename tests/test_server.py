"""Sweeps tracked by a real MLflow server on PostgreSQL (marker `postgres`; the SLURM one also `slurm`)."""

import json
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.conftest import runs_of
from tests.services import clean_env, optuna_postgres, postgres_server, postgres_uri, slurm_cluster  # noqa: F401
from tests.test_search import command as search_command
from tests.test_slurm import SLURM, submitit_logs
from tests.test_sweep import assert_complete_job, split, sweep

pytestmark = pytest.mark.slow  # real processes and services: make test-all

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


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.usefixtures("slurm_cluster")
def test_a_slurm_search_keeps_its_study_in_postgres_and_no_password_in_runs(project, postgres_server, optuna_postgres):  # noqa: F811
    """Optuna's study in PostgreSQL, the runs on the MLflow server, the jobs on SLURM: each trial's value is
    its job's final score, and the database password given in the storage URL is in no tag or param."""
    study_name, experiment = f"slurm-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    args = ["batch_size=choice(32, 64)", f"hydra.sweeper.storage={optuna_postgres}",
            f"hydra.sweeper.study_name={study_name}", "hydra.sweeper.sampler=grid", "hydra.sweeper.pruner=none",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.seeds_per_trial=1",
            *SLURM]  # fmt: skip
    env = clean_env(MLFLOW_TRACKING_URI=postgres_server, MLFLOW_EXPERIMENT_NAME=experiment)
    done = subprocess.run(search_command(*args), cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (project / "mlruns").exists(), "no store and no study beside the project"

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=optuna_postgres).get_trials()
    assert [t.state for t in study] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["batch_size"] for t in study) == [32, 64]

    (parent,), children = split(runs_of(postgres_server, experiment))
    assert parent.info.status == "FINISHED" and parent.data.tags["study_name"] == study_name
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    values = {str(t.number): t.value for t in study}
    for child in children:  # each trial's value is its one seed's final score, read from the server
        assert child.data.metrics["final_eval_return_mean"] == pytest.approx(values[child.data.tags["trial_number"]])
    assert len(submitit_logs(Path(parent.data.tags["sweep_dir"]))) == 2, "both jobs ran under SLURM"

    password = urlsplit(optuna_postgres).password
    assert password and parent.data.tags["optuna_storage"] == optuna_postgres.replace(password, "***")
    for run in (parent, *children):
        assert password not in json.dumps(run.data.tags) + json.dumps(run.data.params)
    assert "***" in children[0].data.params["trial.storage"]
