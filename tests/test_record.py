"""The record survives real use: concurrent sweeps and runs, a fresh store, a server outage, a hard kill,
a scheduler's SIGTERM to a sweep's process group, and resumes that change the config.

Real processes, real signals, a real `mlflow server` killed and restarted; MLflow's HTTP retries are
shortened through its own environment variables so an outage costs seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from dqn.report.sweep_report import write_report
from dqn.run.resume import ResumeError, claim
from dqn.tracking.recorder import JOURNAL, SENT
from tests.conftest import runs_of
from tests.services import MlflowServer, clean_env, wait_until
from tests.test_sweep import TINY_JOB

pytestmark = pytest.mark.slow  # real processes and services: make test-all

SHORT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
JOB = [*TINY_JOB, "mlflow.log_model=false"]
# Long enough to be signalled mid-training on an idle machine too; checkpoints often, so a kill has one behind it.
LONG_JOB = [*JOB, "total_steps=20000", "eval_every=1000", "checkpoint_every=1500"]


def start(cwd: Path, *args: str, env: dict | None = None, group: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dqn.train", *args],
        cwd=cwd,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def journal_lines(folder: Path) -> int:
    path = folder / JOURNAL
    return path.read_text().count("\n") if path.exists() else 0


def sent_bytes(folder: Path) -> int:
    path = folder / SENT
    return int(path.read_text() or 0) if path.exists() else 0


def job_folders(project: Path) -> list[Path]:
    return [p.parent for p in project.glob("runs/**/run.json")]


def training(folder: Path) -> bool:
    """The job's log shows a greedy evaluation: it is past set-up, inside the training loop."""
    log = folder / "train.log"
    return log.exists() and "greedy evaluation" in log.read_text()


def only_folder(project: Path) -> Path:
    return wait_until(lambda: (f := job_folders(project)) and f[0], 180, "the job's folder")


def assert_episodes_complete(client: MlflowClient, run_id: str) -> None:
    """Every episode is there: the steps advance by exactly each episode's length, from the first."""
    lengths = history(client, run_id, "episode_length")
    steps = [s for s, _ in lengths]
    assert steps[0] == lengths[0][1]
    assert all(b - a == v for a, b, (_, v) in zip(steps, steps[1:], lengths[1:], strict=False))
    assert [s for s, _ in history(client, run_id, "episode_return")] == steps


def test_two_sweeps_started_together_on_a_fresh_store_keep_their_own_jobs(project, store):
    args = ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *JOB]
    sweeps = [start(project, *args), start(project, *args)]
    for sweep in sweeps:
        code, err = finish(sweep)
        assert code == 0, err[-3000:]
    runs = runs_of(store)
    parents = [r for r in runs if r.data.tags["dqn.role"] == "sweep"]
    assert len(parents) == 2 and len({p.data.tags["sweep_dir"] for p in parents}) == 2
    client = MlflowClient(store)
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
        assert {c.data.tags["sweep_id"] for c in children} == {parent.data.tags["sweep_id"]}
        assert all(Path(c.data.tags["output_dir"]).parent == Path(parent.data.tags["sweep_dir"]) for c in children)
        report = write_report(client, parent.info.run_id, project / parent.data.tags["sweep_id"])
        assert [row.n_seeds for row in report.rows] == [2]


def test_two_runs_started_together_write_their_own_folders(project, store):
    runs = [start(project, *JOB, f"seed={seed}") for seed in (0, 1)]
    for run in runs:
        code, err = finish(run)
        assert code == 0, err[-3000:]
    finished = runs_of(store)
    assert len(finished) == 2 and len({r.data.tags["output_dir"] for r in finished}) == 2
    for run in finished:
        folder = Path(run.data.tags["output_dir"])
        assert json.loads((folder / "run.json").read_text())["run_id"] == run.info.run_id
        assert f"seed: {run.data.params['seed']}" in (folder / "config.yaml").read_text()


def test_processes_opening_a_store_that_does_not_exist_yet_never_collide(tmp_path):
    opener = (
        "import os, sys, time, pathlib; from dqn.tracking import store\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "(go.parent / f'ready-{os.getpid()}').touch()\n"
        "while not go.exists(): time.sleep(0.01)\n"
        "store.open_experiment(sys.argv[1], 'exp')\n"
    )
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path / str(attempt) / 'mlflow.db'}"
        go = tmp_path / f"go{attempt}"
        openers = [
            subprocess.Popen([sys.executable, "-c", opener, uri, str(go)], stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        ready = 3 * (attempt + 1)
        wait_until(lambda n=ready: len(list(tmp_path.glob("ready-*"))) == n, 300, "the openers' imports")
        go.touch()  # all are waiting: they open the store at once
        for process in openers:
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-2000:]
        assert [e.name for e in MlflowClient(uri).search_experiments()].count("exp") == 1


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    yield server
    server.stop()


def test_a_server_outage_loses_no_metric_and_training_goes_on(project, server):
    env = clean_env(MLFLOW_TRACKING_URI=server.uri, **SHORT_RETRIES)
    job = start(project, *LONG_JOB, "checkpoint_every=0", "total_steps=80000", "eval_every=10000", env=env)
    folder = only_folder(project)
    wait_until(lambda: sent_bytes(folder) > 0, 300, "the first metrics to reach the server")
    server.stop()
    during = journal_lines(folder)
    wait_until(lambda: journal_lines(folder) >= during + 20, 300, "training to go on while the server is down")
    assert job.poll() is None
    server.start()
    code, err = finish(job)
    assert code == 0, err[-3000:]
    log = (folder / "train.log").read_text()
    assert "tracking store unavailable" in log and "tracking store back" in log
    client = MlflowClient(server.uri)
    (run,) = runs_of(server.uri)
    assert run.info.status == "FINISHED"
    assert_episodes_complete(client, run.info.run_id)
    logged = sum(len(history(client, run.info.run_id, key)) for key in run.data.metrics)
    assert logged == journal_lines(folder)  # everything the job accepted, the outage's metrics included


def test_a_run_that_ends_while_the_server_is_down_keeps_its_metrics_for_resume(project, server):
    env = clean_env(MLFLOW_TRACKING_URI=server.uri, **SHORT_RETRIES)
    job = start(project, *JOB, "total_steps=20000", "eval_every=10000", env=env)
    folder = only_folder(project)
    wait_until(lambda: sent_bytes(folder) > 0, 300, "the first metrics to reach the server")
    server.stop()
    code, err = finish(job)
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: the tracking store did not take the end of run") and "resume=" in message
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    unsent = journal_lines(folder)

    server.start()
    client = MlflowClient(server.uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody could end it: its process is gone
    resumed = start(project, f"resume={run_id}", env=env)
    code, err = finish(resumed)
    assert code == 0, err[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert_episodes_complete(client, run_id)
    assert history(client, run_id, "episode_return")[-1][0] >= 2000
    assert sum(len(history(client, run_id, key)) for key in run.data.metrics) >= unsent


def test_a_hard_killed_run_is_taken_over_by_resume_with_no_gap(project, store):
    job = start(project, *LONG_JOB)
    folder = only_folder(project)
    wait_until(lambda: (folder / "checkpoint.pt").exists(), 300, "the first checkpoint")
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    client = MlflowClient(store)
    with pytest.raises(ResumeError, match="a live process is working on it"):
        claim(client.get_run(run_id), project / "another-job")
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)
    assert client.get_run(run_id).info.status == "RUNNING"

    code, err = finish(start(project, f"resume={run_id}"))
    assert code == 0, err[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resume_count"] == "1"
    assert run.data.tags["dqn.previous_status"] == "RUNNING"
    code, err = finish(start(project, *LONG_JOB, "mlflow.experiment_name=straight"))
    assert code == 0, err[-3000:]
    (straight,) = runs_of(store, "straight")
    for key in ("episode_return", "loss", "eval_return_mean"):
        assert history(client, run_id, key) == history(client, straight.info.run_id, key), key


def test_sigterm_to_a_parallel_sweeps_process_group_ends_everything_killed(project, store):
    sweep = start(
        project, "-m", "seed=0,1,2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *LONG_JOB,
        "total_steps=30000", group=True,
    )  # fmt: skip
    wait_until(lambda: sum(map(training, job_folders(project))) >= 2, 300, "two jobs training")
    os.killpg(sweep.pid, signal.SIGTERM)
    code, err = finish(sweep)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    wait_until(lambda: not process_group_alive(sweep.pid), 60, "every process of the sweep to end")
    runs = runs_of(store)
    (parent,) = [r for r in runs if r.data.tags["dqn.role"] == "sweep"]
    children = [r for r in runs if r.data.tags["dqn.role"] == "job"]
    assert parent.info.status == "KILLED" and "SIGTERM" in parent.data.tags["end_reason"]
    assert len(children) == 2  # the jobs that had not started were skipped
    client = MlflowClient(store)
    for child in children:
        assert child.info.status == "KILLED" and "stopped at step" in child.data.tags["end_reason"]
        assert [a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")] == ["checkpoint/checkpoint.pt"]


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def new_folder(project: Path, known: list[Path]) -> Path:
    return wait_until(lambda: [f for f in job_folders(project) if f not in known], 300, "a new job folder")[0]


def interrupt(job: subprocess.Popen, folder: Path) -> str:
    """Ctrl-C once the job trains; return its stderr after it ended (KILLED, with a checkpoint)."""
    wait_until(lambda: training(folder), 300, "training to start")
    job.send_signal(signal.SIGINT)
    code, err = finish(job)
    assert code == 130 and f"continue it with: {sys.executable} -m dqn.train resume=" in err, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("stopped at step ")
    return err


def killed_run(project: Path, *overrides: str) -> str:
    """A real run stopped by Ctrl-C mid-training."""
    job = start(project, *overrides)
    folder = new_folder(project, [])
    interrupt(job, folder)
    return json.loads((folder / "run.json").read_text())["run_id"]


def test_overrides_given_at_resume_become_the_runs_config(project, store):
    run_id = killed_run(project, *LONG_JOB, "total_steps=12000")
    client = MlflowClient(store)
    (folder,) = job_folders(project)
    (folder / "train.log").write_text("")  # the resumed job's first evaluation is the one to wait for
    job = start(project, f"resume={run_id}", "total_steps=14000")
    interrupt(job, folder)
    assert job_folders(project) == [folder]  # the run keeps its folder
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "total_steps: 12000 -> 14000" in run.data.tags["config_changes"]
    saved = Path(client.download_artifacts(run_id, "config.yaml", str(project / "check"))).read_text()
    assert "total_steps: 14000" in saved

    code, err = finish(start(project, f"resume={run_id}"))  # no override: it continues under the new budget
    assert code == 0, err[-3000:]
    assert history(client, run_id, "eval_return_mean")[-1][0] == 14000
    assert client.get_run(run_id).data.tags["resume_count"] == "2"
    assert "end_reason" not in client.get_run(run_id).data.tags


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["network.hidden_sizes=[32,32]"], "checkpoint made with network.hidden_sizes=[64, 64]"),
        (["seed=7"], "seed=7 is invalid on resume"),
    ],
)
def test_a_refused_resume_leaves_the_run_as_it_was(project, store, overrides, message):
    run_id = killed_run(project, *LONG_JOB)
    client = MlflowClient(store)
    before = client.get_run(run_id)
    done = subprocess.run(
        [sys.executable, "-m", "dqn.train", f"resume={run_id}", *overrides], cwd=project, env=clean_env(),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    after = client.get_run(run_id)
    assert after.info.status == before.info.status == "KILLED"
    assert after.data.tags == before.data.tags
