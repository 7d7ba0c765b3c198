"""Sweeps for real: Hydra multiruns of `python -m dqn.train` into MLflow, through each launcher."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from dqn.sweep_protocol import group_name, swept_keys
from tests.conftest import runs_of
from tests.services import MlflowServer, clean_env

TINY_JOB = [
    "total_steps=1000",
    "learning_starts=300",
    "eval_every=500",
    "eval_episodes=1",
    "env.eval_max_episode_steps=100",
    "network=mlp_small",
    "checkpoint_every=0",
]


def sweep(cwd: Path, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dqn.train", "-m", *args, *TINY_JOB],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def split(runs):
    parents = [r for r in runs if r.data.tags.get("dqn.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("dqn.role") == "job"]
    return parents, children


def assert_complete_job(client: MlflowClient, run) -> None:
    """Every metric a finished tiny job logs is there: nothing lost to a concurrent writer."""
    assert run.info.status == "FINISHED"
    history = {k: client.get_metric_history(run.info.run_id, k) for k in ("episode_length", "episode_return")}
    assert len(history["episode_length"]) == len(history["episode_return"]) > 0
    steps = sorted(m.step for m in history["episode_length"])
    lengths = [m.value for m in sorted(history["episode_length"], key=lambda m: m.step)]
    assert steps[0] == lengths[0] and all(b - a == v for a, b, v in zip(steps, steps[1:], lengths[1:], strict=False))
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "eval_return_mean")) == [500, 1000]


def test_group_is_the_swept_overrides_minus_the_seed():
    overrides = ["seed=3", "lr=0.001", "batch_size=256", "total_steps=500"]
    assert group_name(overrides) == "batch_size=256,lr=0.001,total_steps=500"
    assert group_name(overrides, swept=["batch_size", "lr", "seed"]) == "batch_size=256,lr=0.001"
    assert group_name(["seed=1"], swept=["seed"]) == "defaults"
    assert group_name(["seed=1", "lr=0.0005"], swept=["seed"]) == "lr=0.0005"  # only seeds swept: the shared config


@pytest.mark.slow
def test_swept_keys_are_those_with_several_values_on_the_command_line_or_in_params():
    """sweep=exercise_local_optimum selects its agent by a one-valued param: that key is fixed, not swept."""
    config = OmegaConf.create({"hydra": {
        "overrides": {"task": ["batch_size=32,128", "total_steps=1000", "sweep=exercise_local_optimum"]},
        "sweeper": {"params": {"experiment": "exercise", "lr": "0.0001,0.001", "seed": "range(3)"}},
    }})  # fmt: skip
    assert swept_keys(config) == ["batch_size", "lr", "seed"]


def test_sequential_sweep_nests_jobs_under_one_parent_with_a_report(project, store):
    done = sweep(project, "seed=0,1", "batch_size=64,128")
    assert done.returncode == 0, done.stderr[-2000:]
    (parent,), children = split(runs_of(store))
    assert len(children) == 4 and parent.info.status == "FINISHED"
    sweep_id = parent.data.tags["sweep_id"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["sweep_id"] == sweep_id
    assert sorted(c.data.tags["group"] for c in children) == ["batch_size=128"] * 2 + ["batch_size=64"] * 2
    assert "seed=0,1" in parent.data.tags["hydra_overrides"] and parent.data.tags["failed_jobs"] == "0"
    client = MlflowClient(store)
    assert {"report.csv", "report.md", "curves.png", "finals.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    report = (Path(parent.data.tags["sweep_dir"]) / "report.md").read_text()
    assert "| batch_size=128 " in report and "| batch_size=64 " in report


@pytest.mark.slow
def test_a_sweep_ends_with_its_answer_on_the_console_and_in_the_ui(project, store):
    done = sweep(project, "seed=0,1", "batch_size=64,128", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr[-2000:]
    (parent,), children = split(runs_of(store))
    tail = done.stdout[done.stdout.rindex(f"Sweep {parent.data.tags['sweep_id']}: ") :]
    assert "| batch_size=64 " in tail and "Verdict: " in tail
    assert f"Sweep run {parent.info.run_id}: view at http://127.0.0.1:5000/#/experiments/" in tail
    assert all(f"[job {n}] run " in done.stdout for n in range(4))  # parallel jobs' lines say whose they are
    assert all(f"\t[job {n}] seed=" in done.stdout for n in range(4))  # Hydra's job lines, numbered the same
    assert "\t#0 : " not in done.stdout and "Joblib.Parallel(" not in done.stdout
    assert sorted(c.info.run_name for c in children) == [f"s{s} bs{b}" for s in (0, 1) for b in (128, 64)]
    client = MlflowClient(store)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
    assert "Verdict:" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["best_group_n_seeds"] == 2 and "best_group_iqm" in parent.data.metrics
    page = Path(client.download_artifacts(parent.info.run_id, "report.html", str(project / "dl"))).read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page  # one swept key: no heatmap
    assert page.index("sensitivity.png") < page.index("curves.png") < page.index("finals.png")  # the answer first
    assert parent.data.tags["mlflow.note.content"].startswith("- batch_size: ")  # the description opens on the answer


@pytest.mark.slow
def test_one_sweep_id_in_the_console_the_folder_the_store_and_the_report_command(project, store):
    lr = "0.00010206062134502272"  # a sampled-looking float: 3 significant digits in the run name
    done = sweep(project, "seed=3", f"lr={lr},0.0005", "total_steps=600", "eval_every=600", "mlflow.log_model=false")
    assert done.returncode == 0, done.stderr[-2000:]
    (folder,) = (project / "runs" / "multirun").iterdir()
    sweep_id = folder.name
    assert f"sweep {sweep_id}: parent MLflow run " in done.stdout + done.stderr
    (parent,), children = split(runs_of(store))
    assert parent.info.run_name == f"sweep {sweep_id}" and parent.data.tags["sweep_id"] == sweep_id
    assert {c.data.tags["sweep_id"] for c in children} == {sweep_id}
    assert sorted(c.info.run_name for c in children) == ["s3 lr1.02e-4", "s3 lr5e-4"]
    assert sorted(c.data.tags["group"] for c in children) == [f"lr={lr}", "lr=0.0005"]  # the full values
    assert sorted(c.data.params["lr"] for c in children) == [lr, "0.0005"]
    for given in (sweep_id, str(folder.relative_to(project)) + "/"):  # the id, which is the name; the folder
        report = subprocess.run(
            [sys.executable, "-m", "dqn.cli.compare", "--sweep-id", given],
            cwd=project, env=clean_env(), capture_output=True, text=True,
        )  # fmt: skip
        assert report.returncode == 0 and f"Sweep {sweep_id}: " in report.stdout, (given, report.stderr)


@pytest.mark.slow
def test_four_parallel_jobs_on_the_embedded_sqlite_store_lose_nothing(project, store):
    done = sweep(project, "seed=0,1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "database is locked" not in done.stderr
    (parent,), children = split(runs_of(store))
    assert len(children) == 4 and {c.data.params["seed"] for c in children} == {"0", "1", "2", "3"}
    client = MlflowClient(store)
    for child in children:
        assert_complete_job(client, child)


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_jobs(project, store):
    done = sweep(project, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert done.returncode == 0, done.stderr[-2000:]
    (parent,), children = split(runs_of(store))
    assert len(children) == 2 and parent.info.status == "FINISHED"
    client = MlflowClient(store)
    for child in children:
        assert_complete_job(client, child)


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others(project, store):
    done = sweep(project, "lr=1e35,0.001", "max_grad_norm=null")  # lr=1e35 diverges: NaN loss
    assert done.returncode != 0
    assert "1 job(s) of the sweep failed" in done.stderr
    (parent,), children = split(runs_of(store))
    status = {c.data.params["lr"]: c for c in children}
    assert status["1e+35"].info.status == "FAILED" and "loss became" in status["1e+35"].data.tags["end_reason"]
    assert status["0.001"].info.status == "FINISHED"
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_jobs"] == "1"


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend in a temporary directory."""
    server = MlflowServer(tmp_path / "server").start()
    yield server.uri
    server.stop()


@pytest.mark.slow
def test_sweep_against_a_real_tracking_server(project, mlflow_server):
    done = sweep(project, "seed=0,1", env=clean_env(MLFLOW_TRACKING_URI=mlflow_server))
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (project / "mlruns" / "mlflow.db").exists()  # everything went to the server
    (parent,), children = split(runs_of(mlflow_server))
    assert len(children) == 2 and parent.info.status == "FINISHED"
    client = MlflowClient(mlflow_server)
    for child in children:
        assert_complete_job(client, child)
        assert "lunar-dqn.pth" in {a.path for a in client.list_artifacts(child.info.run_id)}
