"""Sweeps on a real SLURM cluster through `hydra/launcher=submitit_slurm_cpu` (marker `slurm`)."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dqn.sweep import MlflowSweepCallback
from mlflow import MlflowClient

from tests.conftest import runs_of
from tests.services import ROOT, clean_env, slurm_cluster  # noqa: F401 (a fixture)
from tests.test_sweep import TINY_JOB, assert_complete_job, split, sweep

# Tiny jobs use a few hundred MB; asking for 1 GB keeps them within a small node's RealMemory.
SLURM = ["hydra/launcher=submitit_slurm_cpu", "hydra.launcher.mem_gb=1"]
# The launcher check runs once dqn.sweep calls it (one line in on_multirun_start, see dqn.launchers).
CHECKED = re.search(r"(require|check)_launcher\(", inspect.getsource(MlflowSweepCallback.on_multirun_start))
needs_the_check = pytest.mark.skipif(not CHECKED, reason="dqn.sweep does not call dqn.launchers.require_launcher yet")


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


@needs_the_check
def test_a_slurm_sweep_without_sbatch_is_refused_in_one_line_before_any_run(project):
    # The interpreter's folder alone on PATH: python works, no SLURM command is found.
    done = refused(project, *SLURM, env=clean_env(PATH=str(Path(sys.executable).parent)))
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1 and "`sbatch` is not on PATH" in done.stderr


@needs_the_check
@pytest.mark.slurm
def test_a_slurm_sweep_to_an_unknown_partition_is_refused_in_one_line_before_any_run(project, slurm_cluster):  # noqa: F811
    done = refused(project, *SLURM, "hydra.launcher.partition=no-such-partition", env=clean_env())
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: hydra.launcher.partition=no-such-partition is invalid: allowed ")
