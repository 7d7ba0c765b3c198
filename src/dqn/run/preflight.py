"""Refuse a sweep that its Hydra launcher cannot run here, before any MLflow run is made.

The SLURM launcher (`hydra/launcher=submitit_slurm_cpu`) needs `sbatch` on PATH, a controller
that answers, and a partition that exists, is up and can hold one job's CPUs and memory;
otherwise submitit fails after the sweep's parent run exists, or the jobs pend forever.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
SINFO_TIMEOUT_S = 30


class LauncherUnavailable(RuntimeError):
    """The sweep's launcher cannot run here; the message is one line naming what is missing."""


@dataclass(frozen=True)
class Partition:
    """One SLURM partition as `sinfo` reports it (CPUs and memory of its smallest node)."""

    name: str
    default: bool
    up: bool
    cpus: int | None
    memory_mb: int | None


def check_launcher(launcher: Mapping[str, Any]) -> None:
    """Raise LauncherUnavailable if `launcher` (the `hydra.launcher` config) cannot run the sweep's jobs.

    Launchers other than SLURM's are always available.
    """
    if launcher.get("_target_") != SLURM_LAUNCHER:
        return
    if shutil.which("sbatch") is None:
        raise LauncherUnavailable(
            "hydra/launcher is SLURM but `sbatch` is not on PATH (a local cluster: scripts/slurm-local.sh start)"
        )
    partitions = slurm_partitions()
    partition = pick_partition(partitions, launcher.get("partition"))
    cpus = (launcher.get("cpus_per_task") or 1) * (launcher.get("tasks_per_node") or 1)
    if partition.cpus is not None and cpus > partition.cpus:
        raise LauncherUnavailable(
            f"hydra.launcher.cpus_per_task={launcher.get('cpus_per_task')} is invalid: allowed at most "
            f"{partition.cpus // (launcher.get('tasks_per_node') or 1)} (the CPUs of a node in partition "
            f"{partition.name})"
        )
    mem_gb = launcher.get("mem_gb")
    if mem_gb is not None and partition.memory_mb is not None and mem_gb * 1024 > partition.memory_mb:
        raise LauncherUnavailable(
            f"hydra.launcher.mem_gb={mem_gb} is invalid: allowed at most {partition.memory_mb // 1024} "
            f"(the memory of a node in partition {partition.name})"
        )


def slurm_partitions() -> list[Partition]:
    """The cluster's partitions, from one `sinfo` call."""
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%P|%a|%c|%m"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise LauncherUnavailable(f"SLURM does not answer: `sinfo` took over {SINFO_TIMEOUT_S} s") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise LauncherUnavailable(f"SLURM does not answer: `sinfo` failed ({reason})")
    partitions = []
    for line in done.stdout.splitlines():
        name, available, cpus, memory = line.split("|")
        partitions.append(
            Partition(name.rstrip("*"), name.endswith("*"), available == "up", _count(cpus), _count(memory))
        )
    return partitions


def pick_partition(partitions: list[Partition], name: str | None) -> Partition:
    """The partition the jobs go to: `name`, else the cluster's default; refused if missing or down."""
    names = ", ".join(p.name for p in partitions) or "none"
    if name is None:
        found = [p for p in partitions if p.default]
        if not found:
            raise LauncherUnavailable(
                f"hydra.launcher.partition is unset and SLURM has no default partition: allowed {names}"
            )
    else:
        found = [p for p in partitions if p.name == name]
        if not found:
            raise LauncherUnavailable(f"hydra.launcher.partition={name} is invalid: allowed {names}")
    partition = found[0]
    if not partition.up:
        raise LauncherUnavailable(f"SLURM partition {partition.name} is down: its jobs would never start")
    return partition


def _count(field: str) -> int | None:
    """sinfo's `8000`, or `8000+` when nodes differ (the smallest); None when it reports none."""
    digits = field.rstrip("+")
    return int(digits) if digits.isdigit() else None
