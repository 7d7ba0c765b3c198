"""Passwords out of everything written: URLs are parsed, so a password holding `/ @ : % # ?` is masked whole."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf
from sqlalchemy.engine import make_url

from dqn.redaction import redact
from dqn.run.resume import with_passwords
from tests.services import clean_env, postgres_uri  # noqa: F401
from tests.test_search import command as search_command

PASSWORD = "Pw.A/b@c:d%e#f?Pw~Z"
OTHER = "Qw.A?x/y@z#Qw~Z"  # the same role's next password
ENCODED = quote(PASSWORD, safe="/:#?")  # SQLAlchemy's URL grammar needs `@` and `%` encoded, not the others
LEAKS = ("Pw.A", "Pw~Z", "Qw.A", "Qw~Z")  # either end of each: a mask that stops at a delimiter leaves one
# of them; `.` and `~` keep them out of the base64 of the report's inlined figures


def url(user: str = "mlflow", database: str = "optuna", port: int = 5432, password: str = PASSWORD) -> str:
    return f"postgresql://{user}:{quote(password, safe='/:#?')}@127.0.0.1:{port}/{database}"


def test_the_url_holds_the_password_as_the_driver_reads_it():
    assert make_url(url()).password == PASSWORD  # the test's premise: this URL is valid, with this password


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (url(), "postgresql://mlflow:***@127.0.0.1:5432/optuna"),
        (f"trial.storage='{url()}' seed=1", "trial.storage='postgresql://mlflow:***@127.0.0.1:5432/optuna' seed=1"),
        (f"storage: {url()}\nseed: 1\n", "storage: postgresql://mlflow:***@127.0.0.1:5432/optuna\nseed: 1\n"),
        ('{"tracking_uri": "' + url() + '"}', '{"tracking_uri": "postgresql://mlflow:***@127.0.0.1:5432/optuna"}'),
        ("postgresql://mlflow:S3cr/etPW@h/optuna", "postgresql://mlflow:***@h/optuna"),
        ("http://user:p%40ss@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
        ("sqlite:////tmp/mlruns/mlflow.db and postgresql://mlflow@h/db", None),  # no password: unchanged
    ],
)
def test_every_urls_password_is_masked(text, masked):
    assert redact(text) == (text if masked is None else masked)


def test_a_resumed_config_gets_its_passwords_back_from_its_own_command():
    saved = OmegaConf.create(
        {"mlflow": {"tracking_uri": redact(url(database="m"))}, "trial": {"storage": redact(url())}}
    )
    current = OmegaConf.create({"mlflow": {"tracking_uri": url(database="m")}, "trial": {"storage": url(database="x")}})
    with_passwords(saved, current)
    assert saved.mlflow.tracking_uri == url(database="m")  # the same URL: its password is back
    assert saved.trial.storage == redact(url())  # another database: left masked


def psql(cluster: Path, port: int, sql: str) -> None:
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-h", str(cluster), "-p", str(port), "-d", "postgres",
         "-v", "ON_ERROR_STOP=1", "-qtAc", sql],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture
def secret_role(postgres_uri: str):  # noqa: F811
    """A role whose password holds every URL delimiter, owning a database for MLflow and one for Optuna."""
    if shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("creating a role needs root (runuser postgres)")
    cluster, port = Path(os.environ.get("DQN_PG_DIR", "/tmp/dqn-postgres")), make_url(postgres_uri).port
    name = f"secret_{uuid.uuid4().hex[:8]}"
    psql(cluster, port, f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'")
    for database in ("mlflow", "optuna"):
        psql(cluster, port, f"CREATE DATABASE {name}_{database} OWNER {name}")
    yield name, port, cluster
    for database in ("mlflow", "optuna"):
        psql(cluster, port, f"DROP DATABASE IF EXISTS {name}_{database} WITH (FORCE)")
    psql(cluster, port, f"DROP ROLE IF EXISTS {name}")


def leaks(text: str) -> list[str]:
    return [leak for leak in LEAKS if leak in text]


def secret_search(project: Path, name: str, port: int, password: str) -> subprocess.CompletedProcess:
    tracking, storage = (url(name, f"{name}_{db}", port, password) for db in ("mlflow", "optuna"))
    command = search_command(
        "lr=tag(log, interval(1e-4, 3e-3))", "hydra.sweeper.n_trials=1", "hydra.sweeper.seeds_per_trial=1",
        "hydra.sweeper.study_name=secret", f"mlflow.tracking_uri='{tracking}'", f"hydra.sweeper.storage='{storage}'",
    )  # fmt: skip
    done = subprocess.run(command, cwd=project, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.postgres
def test_a_search_on_postgresql_writes_its_password_nowhere(project, secret_role):
    """Then the same database reached with another password is the same study and the same parent run."""
    name, port, cluster = secret_role
    tracking, storage = url(name, f"{name}_mlflow", port), url(name, f"{name}_optuna", port)
    done = secret_search(project, name, port, PASSWORD)
    study = optuna.load_study(study_name="secret", storage=storage)  # the search really used the database
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    psql(cluster, port, f"ALTER ROLE {name} PASSWORD '{OTHER}'")
    again = secret_search(project, name, port, OTHER)
    assert "report failed" not in again.stdout + again.stderr
    tracking = url(name, f"{name}_mlflow", port, OTHER)

    output = done.stdout + done.stderr + again.stdout + again.stderr
    found = [f"console: {line}" for line in output.splitlines() if leaks(line)]
    files = [path for path in project.rglob("*") if path.is_file()]
    assert any(path.name == "train.log" for path in files) and any(path.name == "run.json" for path in files)
    assert any(path.parent.name == ".hydra" for path in files)
    for path in files:  # logs, run.json, config.yaml, Hydra's own files, reports, artifacts
        text = path.read_bytes().decode("utf-8", "replace")
        found += [f"{path.relative_to(project)}: {line[:300]}" for line in text.splitlines() if leaks(line)]

    client = MlflowClient(tracking)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2  # the study's one parent (FINISHED again by the second command) and its one job
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    found += [f"experiment tag {key}: {value}" for key, value in experiment.tags.items() if leaks(value)]
    for run in runs:  # params, tags (hydra_overrides, optuna_storage), descriptions (mlflow.note.content)
        written = {**run.data.params, **run.data.tags, "run name": run.info.run_name}
        found += [f"run {run.info.run_id} {key}: {value}" for key, value in written.items() if leaks(value)]
    assert not found, "\n".join(found)
    job = next(run for run in runs if run.data.tags.get("dqn.role") == "job")
    assert (
        job.data.params["trial.storage"] == redact(storage) == f"postgresql://{name}:***@127.0.0.1:{port}/{name}_optuna"
    )
