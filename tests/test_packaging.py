"""The project as a user installs it: a built wheel, not this checkout, trains from any folder."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, runs_of

pytestmark = pytest.mark.slow  # real processes and services: make test-all

ROOT = Path(__file__).resolve().parents[1]
MAKE = re.compile(r"(?<![.\w])make\b")  # `make ui`, not gymnasium.make


def test_a_built_wheel_carries_its_configs_and_trains_from_any_folder(tmp_path):
    wheels, site, work, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "work", tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):  # a copy: building writes build/ into the source folder
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w",
         str(wheels)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("dqn-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "dqn" / "conf" / "train.yaml").is_file()

    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import dqn; print(dqn.__file__)"], cwd=work, env=env, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(site))  # the wheel's dqn, not the checkout's
    printed = []
    for command in ([sys.executable, "-m", "dqn.train"], [str(site / "bin" / "dqn-train")]):
        done = subprocess.run(
            [*command, *TINY, "total_steps=400", "eval_every=0", "mlflow.log_model=false"],
            cwd=work, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        printed.append(re.search(r"after `([^`]+)`", done.stdout).group(1))
    runs = runs_of(f"sqlite:///{work / 'mlruns' / 'mlflow.db'}")
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    interpreters = {sys.executable, Path(sys.executable).name}  # the bare name when PATH finds this very file
    assert printed[0] in {f"{exe} -m dqn.cli.ui" for exe in interpreters}  # as each command was run
    assert printed[1] == str(site / "bin" / "dqn-ui")

    for command in ("dqn.train", "dqn.cli.evaluate", "dqn.cli.compare", "dqn.cli.ui"):
        shown = subprocess.run([sys.executable, "-m", command, "--help"], cwd=work, env=env, capture_output=True,
                               text=True)  # fmt: skip
        assert shown.returncode == 0 and shown.stdout, shown.stderr[-2000:]
        assert not MAKE.search(shown.stdout), (command, MAKE.search(shown.stdout))  # the wheel has no Makefile
        assert "trained/" not in shown.stdout and "trial." not in shown.stdout
    for ui in printed:
        assert subprocess.run([*shlex.split(ui), "--help"], cwd=work, env=env, capture_output=True).returncode == 0
