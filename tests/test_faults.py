"""Trustworthy runs: bad input refused before any run starts; signals, divergence and resume."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf

from dqn.cli.train import train
from dqn.config import TrainConfig
from dqn.learn import NonFiniteLoss
from dqn.run.resume import CHECKPOINT, resumed_config
from tests.conftest import TINY, compose_config, runs_of
from tests.services import wait_until

BAD_INPUTS = [
    (["batch_size=0"], "batch_size=0 is invalid: allowed an integer >= 1"),
    (["batch_size=-3"], "batch_size=-3 is invalid"),
    (["lr=0"], "lr=0.0 is invalid: allowed a float > 0"),
    (["lr=-1e-3"], "lr=-0.001 is invalid"),
    (["gamma=1.5"], "gamma=1.5 is invalid: allowed a float in [0, 1]"),
    (["schedule=constant", "schedule.start=1.2"], "schedule.start=1.2 is invalid: allowed an epsilon in [0, 1]"),
    (["schedule=linear", "schedule.end=-0.1"], "schedule.end=-0.1 is invalid"),
    (["schedule=exponential", "schedule.start=0.1", "schedule.end=0.5"], "schedule.end=0.5 is invalid"),
    (["buffer.capacity=64", "batch_size=128"], "buffer.capacity=64 is invalid: allowed an integer >= batch_size"),
    (["total_steps=0"], "total_steps=0 is invalid"),
    (["total_steps=null"], "total_steps=null is invalid: allowed an integer >= 1 when max_time is null"),
    (["env.id=LunarLander-v2"], "env.id=LunarLander-v2 is invalid: allowed a registered gymnasium id"),
    (["lr=inf"], "lr=inf is invalid: allowed a finite number"),
    (["seed=-1"], "seed=-1 is invalid: allowed an integer in [0, 4294967295]"),
    (["seed=4294967296"], "seed=4294967296 is invalid"),
    (["env.id=FrozenLake-v1"], "env.id=FrozenLake-v1 is invalid: allowed an env whose observation is a vector"),
    (["buffer.capacity=2000000000000"], "buffer.capacity=2000000000000 is invalid: allowed at most"),
    (["+env.kwargs.nonsense=1"], "env.kwargs={'nonsense': 1} (TypeError"),
    (["register=true", "mlflow.registered_model_name=''"], "mlflow.registered_model_name='' is invalid"),
    (["register=true", "mlflow.registered_model_name=a/b"], "mlflow.registered_model_name='a/b' is invalid"),
    ([f"mlflow.experiment_name={'x' * 501}"], "mlflow.experiment_name=xxxx"),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_value_exits_2_with_one_line_and_no_run(project, store, capsys, overrides, message):
    with pytest.raises(SystemExit) as exit_:
        train(compose_config(overrides, project / "runs" / "bad"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert runs_of(store) == []


def cli(cwd: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = env or {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "dqn.train", *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs
    )


NETWORKS = ", ".join(sorted(p.stem for p in (Path(__file__).parents[1] / "src/dqn/conf/network").glob("*.yaml")))


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["batch_size=abc"], ["batch_size=abc is invalid: allowed an integer"]),
        (["lr=[1]"], ["lr=[1] is invalid: allowed a number"]),
        (["network=nope"], [f"network=nope is not an option of network: allowed {NETWORKS}"]),
        (["-m", "hydra/launcher=nosuch"], ["hydra/launcher=nosuch is not an option", "basic, joblib,", "slurm_cpu"]),
        (["-m", "batch_size=64,abc"], ["batch_size=abc is invalid: allowed an integer"]),  # a sweep's 2nd value
        (["batch_sise=3"], ["batch_sise is not a config key"]),
        (["+lrr=1e-3"], ["error: lrr is not a config key"]),
        (["+network.widht=3"], ["error: network.widht is not a config key"]),
    ],
)
def test_composition_errors_are_one_line_naming_key_value_and_allowed(project, store, args, fragments):
    done = cli(project, *args)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and all(f in line for f in fragments), line
    assert runs_of(store) == []
    assert runs_of(store) == []


@pytest.mark.parametrize(
    "uri", ["file:///tmp/dqn-file-store", "garbage", "postgresql://127.0.0.1:1/x"], ids=["file", "garbage", "pg"]
)
def test_an_unusable_tracking_uri_is_one_line_and_no_run(project, uri):
    done = cli(project, "total_steps=100", env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
               | {"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: tracking store {uri!r}")
    assert not list(project.glob("runs/*/*/run.json"))


@pytest.mark.slow
def test_a_read_only_store_is_one_line_and_no_run(project):
    readonly = project / "readonly"
    readonly.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(readonly)]).returncode != 0:
        pytest.skip("cannot mount a read-only filesystem here (needs root)")
    try:
        done = cli(project, "total_steps=100", f"mlflow.tracking_uri=sqlite:///{readonly}/mlruns/mlflow.db")
    finally:
        subprocess.run(["umount", str(readonly)], check=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: tracking store") and "Read-only file system" in done.stderr
    assert "\n" not in done.stderr.strip()


def test_unreachable_tracking_server_is_refused_without_retries(project):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"
    }
    done = cli(project, "total_steps=100", env=env)
    assert done.returncode == 2 and "Retrying" not in done.stderr  # one probe, not MLflow's ~100 s of retries
    assert done.stderr.strip().startswith("error: MLFLOW_TRACKING_URI='http://127.0.0.1:9' is unreachable")
    assert "\n" not in done.stderr.strip()


@pytest.mark.slow
def test_diverging_run_fails_with_reason_and_keeps_last_good_checkpoint(project, store):
    cfg = compose_config(
        TINY + ["lr=1e35", "max_grad_norm=null", "checkpoint_every=1", "learning_starts=1000"], project / "runs" / "nan"
    )
    with pytest.raises(NonFiniteLoss):
        train(cfg)
    (run,) = runs_of(store)
    assert run.info.status == "FAILED"
    reason = run.data.tags["end_reason"]
    assert reason.startswith("NonFiniteLoss: loss became") and "at step" in reason
    failed_at = int(reason.rsplit(" ", 1)[1])
    path = MlflowClient(store).download_artifacts(run.info.run_id, "checkpoint/checkpoint.pt", str(project))
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["step"] < failed_at
    assert all(torch.isfinite(t).all() for t in checkpoint["q"].values())


def wait_for_training(run_dir_root: Path, timeout: float = 300) -> None:
    """Until the job's log shows its first greedy evaluation: the run is open and training is under way."""

    def training() -> bool:
        logs = list(run_dir_root.glob("runs/*/*/train.log"))
        return bool(logs) and "greedy evaluation" in logs[0].read_text()

    wait_until(training, timeout, "training to start")


LONG = [*TINY, "total_steps=12000", "eval_every=4000", "checkpoint_every=0"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_checkpoints_ends_killed_and_resume_continues_the_same_history(project, store, signum):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    job = subprocess.Popen(
        [sys.executable, "-m", "dqn.train", *LONG], cwd=project, env=env, stderr=subprocess.PIPE, text=True
    )
    wait_for_training(project)
    job.send_signal(signum)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130, err[-2000:]
    (run,) = runs_of(store)
    client = MlflowClient(store)
    assert run.info.status == "KILLED" and "stopped at step" in run.data.tags["end_reason"]
    stopped_at = int(run.data.tags["end_reason"].rsplit(" ", 1)[1])
    assert 0 < stopped_at < 12000
    logged = client.get_metric_history(run.info.run_id, "episode_return")
    assert max(m.step for m in logged) == stopped_at  # nothing lost: every finished episode is in MLflow
    assert "checkpoint.pt" in {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    if signum == signal.SIGTERM:
        return

    resumed = cli(project, f"resume={run.info.run_id}", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (run,) = runs_of(store)  # the same run, not a new one
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_step"] == str(stopped_at)
    history = sorted(client.get_metric_history(run.info.run_id, "episode_return"), key=lambda m: m.step)
    steps = [m.step for m in history]
    assert steps == sorted(set(steps))  # no duplicates

    train(compose_config([*LONG, "mlflow.experiment_name=straight"], project / "runs" / "straight"))
    (straight,) = runs_of(store, "straight")
    expected = sorted(client.get_metric_history(straight.info.run_id, "episode_return"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(m.step, m.value) for m in expected]


@pytest.mark.slow
def test_resume_reads_a_config_saved_before_layer_norm_as_unnormalised(project, store):
    """A KILLED run from before `network.layer_norm` existed was trained without it; taking today's
    default instead would refuse its checkpoint."""
    old = OmegaConf.to_container(OmegaConf.structured(TrainConfig), enum_to_str=True)
    del old["network"]["layer_norm"]
    OmegaConf.save(old, project / "config.yaml")
    torch.save({"step": 0}, project / CHECKPOINT)
    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("old")).info.run_id
    client.log_artifact(run_id, str(project / "config.yaml"))
    client.log_artifact(run_id, str(project / CHECKPOINT), "checkpoint")
    client.set_terminated(run_id, "KILLED")

    run = client.get_run(run_id)
    cfg = resumed_config(client, run, [], project / "a")
    assert cfg.network.layer_norm is False and TrainConfig().network.layer_norm is True
    cfg = resumed_config(client, run, ["network.layer_norm=true"], project / "b")  # a command's override still wins
    assert cfg.network.layer_norm is True


@pytest.mark.slow
def test_resume_refuses_unknown_and_finished_runs(project, store):
    train(compose_config([*TINY, "total_steps=300", "eval_every=0"], project / "runs" / "done"))
    (run,) = runs_of(store)
    for run_id, message in [
        ("0123456789abcdef", "resume=0123456789abcdef: no such run"),
        (run.info.run_id, f"resume={run.info.run_id} is FINISHED: allowed a KILLED or FAILED run"),
    ]:
        done = cli(project, f"resume={run_id}")
        assert done.returncode == 2 and done.stderr.strip().startswith(f"error: {message}")
        assert "\n" not in done.stderr.strip()


@pytest.mark.slow
def test_corrupt_resume_files_are_one_line_and_leave_the_run_alone(project, store):
    train(compose_config([*TINY, "total_steps=600", "eval_every=0", "mlflow.log_model=false"], project / "runs" / "x"))
    (run,) = runs_of(store)
    client = MlflowClient(store)
    client.set_terminated(run.info.run_id, "KILLED")
    good_config = (project / "runs" / "x" / "config.yaml").read_text()
    broken = project / "broken"
    broken.mkdir()

    (broken / "config.yaml").write_text("seed: [unclosed\n")
    client.log_artifact(run.info.run_id, str(broken / "config.yaml"))
    done = cli(project, f"resume={run.info.run_id}")
    assert done.returncode == 2 and "its config.yaml is unreadable" in done.stderr and "Traceback" not in done.stderr

    (broken / "config.yaml").write_text(good_config)
    client.log_artifact(run.info.run_id, str(broken / "config.yaml"))
    local = project / "runs" / "x" / CHECKPOINT
    local.write_bytes(local.read_bytes()[:1000])  # a kill in the middle of writing it
    (broken / CHECKPOINT).write_bytes(local.read_bytes())
    client.log_artifact(run.info.run_id, str(broken / CHECKPOINT), "checkpoint")
    done = cli(project, f"resume={run.info.run_id}")
    assert done.returncode == 2 and "its checkpoint is unreadable" in done.stderr and "Traceback" not in done.stderr
    assert "\n" not in done.stderr.strip()
    after = client.get_run(run.info.run_id)
    assert after.info.status == "KILLED" and "resume_count" not in after.data.tags
