"""What Hydra refuses while composing, refused by the real command in one line, exit 2, before any run."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import clean_env

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = sorted(p.stem for p in (ROOT / "src" / "dqn" / "conf" / "network").glob("*.yaml"))


def refused(cwd: Path, *args: str) -> str:
    command = [sys.executable, "-m", "dqn.train", *args]
    done = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert not any(cwd.iterdir()), "a refused command must not leave outputs"
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["batch_size=abc"], ["batch_size=abc", "allowed an integer"]),
        (["lr=[1]"], ["lr=[1]", "allowed a number"]),
        (["network=nosuch"], ["network=nosuch", f"allowed {', '.join(NETWORKS)}"]),
        (["-m", "hydra/launcher=nosuch"], ["hydra/launcher=nosuch", "allowed basic, joblib,", "submitit_slurm_cpu"]),
        (["-m", "batch_size=64,abc"], ["batch_size=abc", "allowed an integer"]),  # a sweep's second value
    ],
)
def test_a_composition_error_is_one_line(tmp_path, args, expected):
    line = refused(tmp_path, *args)
    assert line.startswith("error: ")
    for part in expected:
        assert part in line, line
