"""Sweeps on a real SLURM cluster through `hydra/launcher=submitit_slurm_cpu` (marker `slurm`)."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import runs_of
from tests.services import ROOT, clean_env, slurm_cluster, wait_until  # noqa: F401 (a fixture)
from tests.test_sweep import TINY_JOB, assert_complete_job, split, sweep

pytestmark = pytest.mark.slow  # real processes and services: make test-all

# Tiny jobs use a few hundred MB; asking for 1 GB keeps them within a small node's RealMemory.
SLURM = ["hydra/launcher=submitit_slurm_cpu", "hydra.launcher.mem_gb=1"]


def submitit_logs(sweep_dir: Path) -> list[Path]:
    return sorted((sweep_dir / ".submitit").glob("*/*_log.out"))


@pytest.mark.slurm
def test_two_jobs_on_slurm_finish_under_one_parent_with_the_report_and_job_logs(project, store, slurm_cluster):  # noqa: F811
    done = sweep(project, "seed=0,1", *SLURM)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Bypassing sacct error" not in done.stdout + done.stderr  # sacct answers: submitit sees each job's state
    (parent,), children = split(runs_of(store))
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_jobs"] == "0"
    assert len(children) == 2 and {c.data.params["seed"] for c in children} == {"0", "1"}
    client = MlflowClient(store)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert_complete_job(client, child)
    assert {"report.md", "report.csv", "curves.png", "finals.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    logs = submitit_logs(Path(parent.data.tags["sweep_dir"]))
    assert len(logs) == 2, "one submitit log per job under <sweep dir>/.submitit/<job id>/"
    for log in logs:
        assert "Job completed successfully" in log.read_text()
        assert log.with_name(log.name.replace("_log.out", "_log.err")).exists()


@pytest.mark.slurm
def test_starting_the_local_cluster_again_changes_nothing(slurm_cluster):  # noqa: F811
    conf = Path("/etc/slurm/slurm.conf")
    if not (conf.exists() and "written by dqn scripts/slurm-local.sh" in conf.read_text()):
        pytest.skip("the cluster is not scripts/slurm-local.sh's")
    again = subprocess.run([str(ROOT / "scripts/slurm-local.sh"), "start"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "idle" in again.stdout or "mixed" in again.stdout or "allocated" in again.stdout
    status = subprocess.run([str(ROOT / "scripts/slurm-local.sh"), "status"], capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.count("running (pid") == 5


def refused(project: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "dqn.train", "-m", "seed=0,1", *args, *TINY_JOB],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert not (project / "mlruns").exists(), "a refused sweep must not open its parent MLflow run"
    return done


def test_a_slurm_sweep_without_sbatch_is_refused_in_one_line_before_any_run(project):
    # The interpreter's folder alone on PATH: python works, no SLURM command is found.
    done = refused(project, *SLURM, env=clean_env(PATH=str(Path(sys.executable).parent)))
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1 and "`sbatch` is not on PATH" in done.stderr


@pytest.mark.slurm
def test_a_slurm_sweep_to_an_unknown_partition_is_refused_in_one_line_before_any_run(project, slurm_cluster):  # noqa: F811
    done = refused(project, *SLURM, "hydra.launcher.partition=no-such-partition", env=clean_env())
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: hydra.launcher.partition=no-such-partition is invalid: allowed ")


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slurm
def test_a_preempted_job_is_requeued_and_finishes_its_own_run_with_no_gap(project, store, slurm_cluster):  # noqa: F811
    """`scancel --signal=USR2` is SLURM's preemption warning (and what the time limit sends, signal_delay_s
    ahead): the job checkpoints at its episode end, submitit requeues it, the requeued job continues."""
    job = [*TINY_JOB, "total_steps=30000", "eval_every=2000", "checkpoint_every=0", "mlflow.log_model=false"]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "dqn.train", "-m", "seed=0", *SLURM, *job],
        cwd=project, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def training() -> bool:
        return any("greedy evaluation" in log.read_text() for log in project.glob("runs/multirun/*/0/train.log"))

    wait_until(training, 300, "the SLURM job to train")
    job_id = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()[0]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    _, err = sweep.communicate(timeout=900)  # the requeued job waits SLURM's requeue delay (about 2 minutes)
    assert sweep.returncode == 0, err[-3000:]

    (parent,), (child,) = split(runs_of(store))
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_jobs"] == "0"
    assert child.info.status == "FINISHED" and child.data.tags["resume_count"] == "1"
    resumed_at = int(child.data.tags["resumed_from_step"])
    assert 0 < resumed_at < 30000
    client = MlflowClient(store)
    lengths = history(client, child.info.run_id, "episode_length")
    steps = [step for step, _ in lengths]
    assert steps == sorted(set(steps)) and steps[0] == lengths[0][1]  # no duplicated step
    assert all(b - a == v for a, b, (_, v) in zip(steps, steps[1:], lengths[1:], strict=False))  # no gap
    assert steps[0] < resumed_at < steps[-1]  # episodes on both sides of the requeue
    assert [s for s, _ in history(client, child.info.run_id, "eval_return_mean")] == list(range(2000, 30001, 2000))
