"""One training job from start to end: hold its folder, open (or continue) its MLflow run, train, deliver the
weights and the model; the run ends FINISHED, FAILED or KILLED however the job ends."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from dqn.config import (
    ConfigError,
    TrainConfig,
    unknown_keys,
    validate,
)
from dqn.learn import learn
from dqn.redaction import redact_file
from dqn.report.figures import learning_curve
from dqn.run.commands import view_at
from dqn.run.naming import run_name
from dqn.run.progress import Progress
from dqn.run.resume import CHECKPOINT, RUN_RECORD, OpenedRun, ResumeError, continue_run, live_process, requeued_run
from dqn.run.signals import Interrupted, StopRequest, stop_signals
from dqn.search import trial
from dqn.stops import Pruned, Stopped
from dqn.sweep_protocol import group_name, group_overrides, read_sweep, sweep_stopping
from dqn.tracking import models
from dqn.tracking.recorder import Recorder, ended
from dqn.tracking.store import (
    FolderLock,
    experiment_name,
    flatten,
    open_experiment,
    origin_tags,
    redact,
    tracking_uri,
)

log = logging.getLogger("dqn")


def open_run(
    cfg: DictConfig, settings: TrainConfig, hydra_cfg: Any, out_dir: Path, requeued: bool = False
) -> OpenedRun:
    """The job's recorder (a new run, or the resumed one), its config, its resume checkpoint, and the
    lock on the resumed run's previous folder (None for a new run)."""
    if not settings.mlflow.enabled:
        return OpenedRun(Recorder(None, None), cfg, None, None)
    root = Path.cwd()
    uri = tracking_uri(settings.mlflow.tracking_uri, root)
    client, experiment_id = open_experiment(uri, experiment_name(settings.mlflow.experiment_name))
    overrides = list(hydra_cfg.overrides.task)
    if settings.resume:  # a requeued job's overrides are already in its run's config
        return continue_run(client, settings, [] if requeued else overrides, out_dir)
    tags = origin_tags("job", overrides, root) | {"output_dir": str(out_dir.resolve()), "group": group_name(overrides)}
    sweep = read_sweep(Path(hydra_cfg.sweep.dir)) if hydra_cfg.mode == RunMode.MULTIRUN else None
    if sweep is not None:
        tags |= {
            "mlflow.parentRunId": sweep["parent_run_id"],
            "sweep_id": sweep["sweep_id"],
            "group": group_name(overrides, sweep["swept"]),
        }
    if settings.trial.number is not None:  # a seed of an Optuna search's trial (dqn.search)
        tags["trial_number"] = str(settings.trial.number)
    named = group_overrides(overrides, sweep["swept"] if sweep is not None else None)
    run = client.create_run(experiment_id, run_name=run_name(named, settings.seed), tags=tags)
    (out_dir / RUN_RECORD).write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": redact(uri)}))
    address = view_at(uri, experiment_id, run.info.run_id)
    log.info("run %s (%s) tracked at %s; %s", run.info.run_id, run.info.run_name, redact(uri), address)
    return OpenedRun(Recorder(client, run.info.run_id, out_dir), cfg, None, None)


def run_job(cfg: DictConfig, hydra_cfg: Any) -> float | None:
    """Validate, hold the job's folder, open the run, train; the run ends however this ends.

    Stop signals are caught from before the run exists, so no signal can leave it RUNNING.
    """
    unknown = unknown_keys(OmegaConf.to_container(cfg))
    if unknown:
        raise ConfigError(
            f"{unknown[0]} is not a config key: allowed the keys `python -m dqn.train --help` lists (no `+` needed)"
        )
    out_dir = Path(hydra_cfg.runtime.output_dir)
    requeued = requeued_run(out_dir)
    if requeued is not None:  # SLURM requeued this job: continue its run, no `resume=` needed
        with open_dict(cfg):
            cfg.resume = requeued
        log.info("requeued by SLURM: continuing run %s", requeued)
    settings: TrainConfig = OmegaConf.to_object(cfg)
    validate(settings)
    try:
        lock = FolderLock(out_dir)
    except BlockingIOError:
        if settings.resume:  # the run's own folder, where a resume continues: its process is alive
            raise ResumeError(f"resume={settings.resume}: {live_process(out_dir)}") from None
        raise ConfigError(f"hydra.run.dir={out_dir} is in use by a running job: allowed a folder of its own") from None
    sweep_dir = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    locks, recorder, signalled = [lock], None, StopRequest()
    try:
        with stop_signals() as signalled:
            if sweep_dir is not None and sweep_stopping(sweep_dir):
                log.warning("job %s not started: the sweep is stopping", hydra_cfg.job.num)
                return None
            if not settings.resume:
                (out_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
            recorder, cfg, checkpoint, claimed = open_run(cfg, settings, hydra_cfg, out_dir, requeued is not None)
            locks.append(claimed)
            with ended(recorder, signalled):
                if checkpoint is None:
                    recorder.log_params(flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
                    recorder.log_artifact(out_dir / "config.yaml")
                else:
                    settings = OmegaConf.to_object(cfg)  # the resumed run's own config (validated by open_run)

                def stop_requested() -> bool:
                    return signalled() or (sweep_dir is not None and sweep_stopping(sweep_dir))

                deliver(settings, recorder, checkpoint, out_dir, stop_requested)
    except Pruned as pruned:  # the run is KILLED and tagged pruned; the worker moves on
        log.warning("%s", pruned)
        return None
    except (Stopped, KeyboardInterrupt) as error:  # asked to stop, or a second Ctrl-C
        run_id = recorder.run_id if recorder else None
        raise Interrupted(str(error), run_id, signalled.requeue, settings.trial.number is not None) from None
    finally:
        for held in filter(None, locks):
            held.release()

    final = score(recorder.history, settings.keep_best)
    log.info("done: score %s; outputs in %s", "none" if final is None else f"{final:.1f}", out_dir)
    return final


def score(history: dict[str, list[tuple[int, float]]], keep_best: bool) -> float | None:
    """What lunar-dqn.pth scored: its fresh final evaluation (unbiased), else the evaluation that chose it."""
    for key in ("final_eval_return_mean", "best_eval_return_mean" if keep_best else "eval_return_mean"):
        if history.get(key):
            return history[key][-1][1]
    return None


def deliver(settings: TrainConfig, recorder: Recorder, checkpoint: dict | None, out_dir: Path, stop_requested) -> None:
    """Train, then save and log what the run delivers: weights, learning curve, the MLflow model."""

    def save(state: dict) -> None:
        """Flush, then checkpoint: the metrics on disk always reach at least as far as the checkpoint."""
        recorder.flush()
        temporary = out_dir / f"{CHECKPOINT}.tmp"
        torch.save(state, temporary)
        temporary.replace(out_dir / CHECKPOINT)  # a kill mid-write leaves the previous checkpoint whole
        recorder.log_artifact(out_dir / CHECKPOINT, "checkpoint")

    start = checkpoint["step"] if checkpoint else 0  # a resumed run continues its counts
    episodes = sum(step <= start for step, _ in recorder.history.get("episode_return", []))
    progress = Progress(settings.total_steps, start, episodes)
    prune = trial.pruning(settings, recorder)  # raises Pruned at an evaluation of a pruned search trial

    def record(metrics: dict[str, float], step: int) -> None:
        recorder.log(metrics, step)
        progress.update(metrics, step)
        prune(metrics, step)

    try:
        estimator = learn(settings, record, save, checkpoint, stop_requested)
    finally:
        progress.close()
    estimator.save_weights(out_dir / "lunar-dqn.pth")
    learning_curve(recorder.history, out_dir / "learning_curve.png")
    for artifact in ("lunar-dqn.pth", "learning_curve.png"):
        recorder.log_artifact(out_dir / artifact)
    if recorder.client is not None and settings.mlflow.log_model:
        recorder.flush()
        name = settings.mlflow.registered_model_name if settings.register else None
        uri = models.log_model(recorder.client.tracking_uri, recorder.run_id, estimator, name)
        log.info("model logged as %s", uri)


def redact_hydra_files(hydra_cfg: Any) -> None:
    """Mask passwords in the files Hydra wrote before the job started: <output>/.hydra/*.yaml and, in a
    multirun, the sweep's multirun.yaml (nothing reads them back; a requeued SLURM job reads submitit's pickle)."""
    files = []
    if hydra_cfg.output_subdir is not None:
        files += sorted((Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir).glob("*.yaml"))
    if hydra_cfg.mode == RunMode.MULTIRUN:
        files.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    for path in files:
        with suppress(FileNotFoundError):
            redact_file(path)


class JobLabel(logging.Filter):
    """Prefix this job's log lines with its number: parallel jobs share one console."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.prefix = f"[job {number}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            record.msg = f"{self.prefix}{record.msg}"
        return True


@contextmanager
def labelled(hydra_cfg: Any) -> Iterator[None]:
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    label = JobLabel(hydra_cfg.job.num)
    log.addFilter(label)
    try:
        yield
    finally:
        log.removeFilter(label)  # a joblib worker runs other jobs after this one
