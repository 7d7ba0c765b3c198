"""`python -m dqn.train`: compose the config, validate it, train one agent inside one MLflow run.

Sweeps are Hydra's: `python -m dqn.train -m batch_size=128,256 lr=1e-4,5e-4`.
`python -m dqn.train resume=<run_id>` continues a KILLED or FAILED run from its last checkpoint.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dqn import models, tracking
from dqn.config import ConfigError, TrainConfig, register_configs, validate
from dqn.learn import CheckpointMismatch, learn
from dqn.plots import learning_curve
from dqn.progress import Progress
from dqn.sweep import config_overrides, group_name, read_sweep

log = logging.getLogger("dqn")
register_configs()
CHECKPOINT = "checkpoint.pt"
# What a run's saved config.yaml meant where it predates a key whose default has since changed.
BEFORE_THE_KEY = {"network": {"layer_norm": False}}


class ResumeError(ValueError):
    """`resume=` names a run that cannot be continued."""


USER_ERRORS = (ConfigError, ResumeError, CheckpointMismatch, tracking.TrackingUnavailable)


def run_name(overrides: list[str], seed: int) -> str:
    """A readable name from what the command line changed, e.g. `batch_size=256,lr=0.0005,seed=3`."""
    parts = config_overrides(overrides)
    if not any(p.startswith("seed=") for p in parts):
        parts.append(f"seed={seed}")
    return ",".join(parts)[:250]


@contextmanager
def stop_signals() -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C or SIGTERM (a cluster's preemption) asks training to stop at the end of
    the current episode, checkpointed; a second one stops at once."""
    requested = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} twice: stopped at once")
        requested.set()
        log.warning("%s: stopping at the end of this episode (again to stop at once)", signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def resumed(client: MlflowClient, run_id: str, overrides: list[str], out_dir: Path) -> tuple[DictConfig, dict]:
    """The run's own config (with this command's key=value overrides on top) and its last checkpoint."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ResumeError(f"resume={run_id}: no such run in the tracking store") from None
    if run.info.status not in ("KILLED", "FAILED"):
        raise ResumeError(f"resume={run_id} is {run.info.status}: allowed a KILLED or FAILED run")
    try:
        config_file = client.download_artifacts(run_id, "config.yaml", str(out_dir))
        checkpoint_file = client.download_artifacts(run_id, f"checkpoint/{CHECKPOINT}", str(out_dir))
    except (MlflowException, OSError):
        raise ResumeError(f"resume={run_id}: the run has no checkpoint to continue from") from None
    extra = [o for o in overrides if not o.startswith(("resume=", "hydra", "+hydra"))]
    try:
        saved = OmegaConf.merge(BEFORE_THE_KEY, OmegaConf.load(config_file))
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved, OmegaConf.from_dotlist(extra))
    except OmegaConfBaseException as error:
        raise ResumeError(f"resume={run_id}: cannot apply {extra}: {str(error).splitlines()[0]}") from None
    cfg.resume = run_id
    return cfg, torch.load(checkpoint_file, map_location="cpu", weights_only=True)


def open_run(cfg: DictConfig, settings: TrainConfig, hydra_cfg: Any, out_dir: Path):
    """The job's recorder (a new run, or the resumed one), its config and its resume checkpoint."""
    if not settings.mlflow.enabled:
        return tracking.Recorder(None, None), cfg, None
    root = Path.cwd()
    uri = tracking.tracking_uri(settings.mlflow.tracking_uri, root)
    client, experiment_id = tracking.open_store(uri, tracking.experiment_name(settings.mlflow.experiment_name))
    overrides = list(hydra_cfg.overrides.task)
    if settings.resume:
        cfg, checkpoint = resumed(client, settings.resume, overrides, out_dir)
        validate(OmegaConf.to_object(cfg))
        return tracking.Recorder.reopen(client, settings.resume), cfg, checkpoint
    commit = tracking.git_commit(root)
    tags = {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "hydra_overrides": " ".join(overrides),
        "output_dir": str(out_dir.resolve()),
        "dqn.role": "job",
        "group": group_name(overrides),
    }
    sweep = read_sweep(Path(hydra_cfg.sweep.dir)) if hydra_cfg.mode == RunMode.MULTIRUN else None
    if sweep is not None:
        tags |= {
            "mlflow.parentRunId": sweep["parent_run_id"],
            "sweep_id": sweep["sweep_id"],
            "group": group_name(overrides, sweep["swept"]),
        }
    run = client.create_run(experiment_id, run_name=run_name(overrides, settings.seed), tags=tags)
    log.info("run %s (%s) tracked at %s", run.info.run_id, run.info.run_name, uri)
    return tracking.Recorder(client, run.info.run_id), cfg, None


def run_job(cfg: DictConfig, hydra_cfg: Any) -> float | None:
    """Validate, open the run, train, store the results; the run ends however this ends."""
    settings: TrainConfig = OmegaConf.to_object(cfg)
    validate(settings)
    out_dir = Path(hydra_cfg.runtime.output_dir)
    recorder, cfg, checkpoint = open_run(cfg, settings, hydra_cfg, out_dir)
    if checkpoint is not None:
        settings = OmegaConf.to_object(cfg)  # the resumed run's own config (validated by open_run)

    def save(state: dict) -> None:
        torch.save(state, out_dir / CHECKPOINT)
        recorder.log_artifact(out_dir / CHECKPOINT, "checkpoint")

    with tracking.ended(recorder), stop_signals() as stop_requested:
        if checkpoint is None:
            (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            recorder.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
            recorder.log_artifact(out_dir / "config.yaml")
        else:
            recorder.set_tag("resumed_from_step", str(checkpoint["step"]))
        progress = Progress(settings.total_steps)

        def record(metrics: dict[str, float], step: int) -> None:
            recorder.log(metrics, step)
            progress.update(metrics, step)

        try:
            estimator = learn(settings, record, save, checkpoint, stop_requested)
        finally:
            progress.close()
        estimator.save_weights(out_dir / "lunar-dqn.pth")
        learning_curve(recorder.history, out_dir / "learning_curve.png")
        for artifact in ("lunar-dqn.pth", "learning_curve.png"):
            recorder.log_artifact(out_dir / artifact)
        if recorder.client is not None and settings.mlflow.log_model:
            name = settings.mlflow.registered_model_name if settings.register else None
            uri = models.log_model(recorder.client.tracking_uri, recorder.run_id, estimator, name)
            log.info("model logged as %s", uri)

    delivered = "best_eval_return_mean" if settings.keep_best else "eval_return_mean"  # what lunar-dqn.pth scored
    evals = recorder.history.get(delivered)
    final = evals[-1][1] if evals else None
    log.info("done: %s %s; outputs in %s", delivered, final, out_dir)
    return final


def train(cfg: DictConfig) -> float | None:
    """Train one agent as `cfg` says; return the evaluation mean of the weights it delivers (the sweep objective).

    Bad input exits 2 with one line and no run. In a multirun, a job that fails is recorded
    as FAILED and the sweep goes on (the sweep reports the failures at its end).
    """
    hydra_cfg = HydraConfig.get()
    try:
        return run_job(cfg, hydra_cfg)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        log.exception("job %s failed; the sweep goes on", hydra_cfg.job.num)
        return None


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
