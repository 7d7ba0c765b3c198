"""dqn.run.preflight: a sweep its launcher cannot run is refused in one line naming what is missing."""

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dqn.run.preflight import SLURM_LAUNCHER, LauncherUnavailable, check_launcher, slurm_partitions
from dqn.run.sweep_callback import refusing
from tests.services import slurm_cluster  # noqa: F401 (a fixture)

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}


def slurm(**settings) -> dict:
    return {"_target_": SLURM_LAUNCHER, "partition": None, "cpus_per_task": 1, "tasks_per_node": 1, "mem_gb": 1} | (
        settings
    )


def test_launchers_other_than_slurm_need_nothing(monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    check_launcher(JOBLIB)
    check_launcher(OmegaConf.create(JOBLIB))  # Hydra hands over a DictConfig


def test_slurm_without_sbatch_on_path_is_refused_naming_sbatch(monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    with pytest.raises(LauncherUnavailable, match=r"`sbatch` is not on PATH") as refused:
        check_launcher(OmegaConf.create(slurm()))
    assert "\n" not in str(refused.value)


def test_a_refusal_inside_the_multirun_exits_2_with_one_error_line(monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    with pytest.raises(SystemExit) as exited, refusing():
        check_launcher(slurm())
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: hydra/launcher is SLURM but `sbatch` is not on PATH")


@pytest.mark.slurm
def test_the_default_partition_takes_a_small_job(slurm_cluster):  # noqa: F811
    check_launcher(slurm())
    default = next(p for p in slurm_partitions() if p.default)
    check_launcher(slurm(partition=default.name))


@pytest.mark.slurm
def test_an_unknown_partition_is_refused_naming_the_ones_there_are(slurm_cluster):  # noqa: F811
    names = ", ".join(p.name for p in slurm_partitions())
    with pytest.raises(LauncherUnavailable) as refused:
        check_launcher(slurm(partition="no-such-partition"))
    assert str(refused.value) == f"hydra.launcher.partition=no-such-partition is invalid: allowed {names}"


@pytest.mark.slurm
def test_more_memory_or_cpus_than_a_node_has_is_refused(slurm_cluster):  # noqa: F811
    cpus = next(p for p in slurm_partitions() if p.default).cpus
    with pytest.raises(LauncherUnavailable, match=r"^hydra.launcher.mem_gb=100000 is invalid: allowed at most \d+ "):
        check_launcher(slurm(mem_gb=100_000))
    with pytest.raises(
        LauncherUnavailable, match=rf"^hydra.launcher.cpus_per_task=1000 is invalid: allowed at most {cpus} "
    ):
        check_launcher(slurm(cpus_per_task=1000))
