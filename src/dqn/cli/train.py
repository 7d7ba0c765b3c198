"""The training command (`python -m dqn.train`, `dqn-train`): compose the config, validate it, train one agent
inside one MLflow run.

Sweeps are Hydra's: `python -m dqn.train -m batch_size=128,256 lr=1e-4,5e-4`.
`python -m dqn.train resume=<run_id>` continues a KILLED or FAILED run, or one whose process is gone,
from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from dqn.cli.progress import Progress
from dqn.cli.refusals import check_command_line
from dqn.config import (
    ConfigError,
    SearchConfig,
    TrainConfig,
    describe,
    register_configs,
    register_resolvers,
    unknown_keys,
    validate,
)
from dqn.learn import learn
from dqn.migrations import migrate_config
from dqn.redaction import redact_file, redact_logs, restore
from dqn.report.figures import learning_curve
from dqn.run.commands import resume_command, view_at
from dqn.search import trial
from dqn.state import CheckpointMismatch, check_checkpoint
from dqn.sweep_protocol import group_name, group_overrides, read_sweep, sweep_stopping
from dqn.tracking import models
from dqn.tracking.recorder import HEARTBEAT_TAG, Journal, Recorder, ended, send_journal
from dqn.tracking.store import (
    LEASE_SECONDS,
    FolderLock,
    TrackingUnavailable,
    check_reachable,
    experiment_name,
    first_line,
    flatten,
    folder_in_use,
    git_commit,
    holder,
    open_store,
    redact,
    sqlite_path,
    tracking_uri,
)

log = logging.getLogger("dqn")
register_configs()
register_resolvers()
HELP = """python -m dqn.train: train one DQN agent on LunarLander, tracked in MLflow.

  python -m dqn.train [key=value ...] [group=option ...]     one run
  python -m dqn.train -m batch_size=64,128 seed='range(5)'   a sweep: one job per combination
  python -m dqn.train resume=<run id> [key=value ...]        continue a stopped run

Config groups (group=option):
$APP_CONFIG_GROUPS
Keys (key = default, then what it means):
{keys}

Python's and Hydra's flags: --cfg job (print the composed config), --info, --hydra-help.
"""
OmegaConf.register_new_resolver(
    "dqn.train_help", lambda: HELP.format(keys="\n".join(describe(TrainConfig)).replace("$", "$$")), replace=True
)
CHECKPOINT = "checkpoint.pt"
RUN_RECORD = "run.json"
RESUMABLE = "a KILLED or FAILED run, or a RUNNING one whose process is gone"


class ResumeError(ValueError):
    """`resume=` names a run that cannot be continued."""


class Interrupted(KeyboardInterrupt):
    """A job stopped by a signal, after its run was ended KILLED; says how to continue it."""

    def __init__(
        self, reason: str, run_id: str | None, requeue: Callable[[], None] | None = None, search: bool = False
    ) -> None:
        self.requeue = requeue  # under submitit: have the job requeued (it continues this run)
        if run_id is None:
            how = "stopped"
        elif requeue is not None:
            how = f"run {run_id} is KILLED with its last checkpoint; SLURM requeues the job, which continues it"
        elif search:
            how = f"run {run_id} is KILLED; the search's own command, run again, runs its trial again"
        else:
            how = f"run {run_id} is KILLED with its last checkpoint; continue it with: {resume_command(run_id)}"
        super().__init__(f"{reason or 'interrupted'}: {how}")


USER_ERRORS = (ConfigError, ResumeError, CheckpointMismatch, TrackingUnavailable)


def run_name(overrides: list[str], seed: int) -> str:
    """Readable in the UI's narrow Run Name column, which cuts the end: the seed first, then the job's config
    short, e.g. `s3 bs256 lr5e-4` for `seed=3 batch_size=256 lr=0.0005`. The full values are the run's params
    and its `group` tag."""
    return " ".join([f"s{seed}", *map(short_override, overrides)])[:250]


def short_override(override: str) -> str:
    """`batch_size=256` -> `bs256`, `lr=0.00010206062134502272` -> `lr1.02e-4`, `network=mlp_small` ->
    `network=mlp_small`: a key of several words by its initials, numbers to 3 significant digits."""
    key, _, value = override.lstrip("+").partition("=")
    words = key.rsplit(".", 1)[-1].split("_")
    short = "".join(w[0] for w in words if w) if len(words) > 1 else words[0]
    try:
        number = float(value)
    except ValueError:
        return f"{short}={value}"
    return f"{short}{significant(number)}"


def significant(number: float, digits: int = 3) -> str:
    """`number` to `digits` significant digits, compact: 128 -> `128`, 0.99 -> `0.99`, 0.0005 -> `5e-4`."""
    if number.is_integer() and abs(number) < 1e5:
        return str(int(number))
    if math.isfinite(number) and number != 0 and not 1e-2 <= abs(number) < 1e5:
        mantissa, exponent = f"{number:.{digits - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{number:.{digits}g}"


class StopRequest:
    """Whether a signal asked this job to stop, and, under submitit, how to have it requeued afterwards."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.requeue: Callable[[], None] | None = None

    def __call__(self) -> bool:
        return self.event.is_set()


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """The first Ctrl-C or SIGTERM asks training to stop at the end of the current episode,
    checkpointed; a second one stops at once. A handler that was there before (a sequential sweep's)
    hears the first one too.

    Under submitit (a SLURM job), SIGUSR2 is the cluster's preemption or time-limit warning: the job
    stops the same way, and once its run is ended and checkpointed, submitit's own handler is called
    to requeue it; the requeued job continues the same run (`requeued_run`).
    """
    request = StopRequest()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        if request():
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} twice: stopped at once")
        request.event.set()
        log.warning("%s: stopping at the end of this episode (again to stop at once)", signal.Signals(signum).name)
        chained = previous.get(signum)
        if signum == signal.SIGUSR2:
            request.requeue = lambda: chained(signum, None)
        elif callable(chained) and chained is not signal.default_int_handler:
            chained(signum, frame)

    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    signals = [signal.SIGINT, signal.SIGTERM]
    if callable(signal.getsignal(signal.SIGUSR2)):  # submitit's checkpoint-and-requeue handler
        signals.append(signal.SIGUSR2)
    previous.update({s: signal.signal(s, handler) for s in signals})
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def requeued_run(out_dir: Path) -> str | None:
    """The run this job already made, when SLURM has requeued the job (same folder, SLURM_RESTART_COUNT >= 1)."""
    record = out_dir / RUN_RECORD
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1 or not record.is_file():
        return None
    return json.loads(record.read_text())["run_id"]


def run_folder(run: Run) -> Path | None:
    folder = run.data.tags.get("output_dir")
    return Path(folder) if folder else None


def claim(run: Run, out_dir: Path) -> FolderLock | None:
    """Take over `run` for a resume: refuse while a live process works on it.

    A RUNNING run is abandoned when its folder is here and unlocked (the process is gone: a hard kill,
    the OOM killer), or, when the folder cannot be seen from here, when its heartbeat is older than
    the lease. The lock returned is held for the whole resumed job, so two resumes cannot both run.
    """
    run_id, status, folder = run.info.run_id, run.info.status, run_folder(run)
    if status not in ("KILLED", "FAILED", "RUNNING"):
        raise ResumeError(f"resume={run_id} is {status}: allowed {RESUMABLE}")
    if folder is not None and folder.resolve() == out_dir.resolve():
        return None  # a requeued job continuing in its own folder, which it already holds
    if folder is not None and folder.is_dir():
        try:
            return FolderLock(folder)
        except BlockingIOError:
            raise ResumeError(f"resume={run_id}: {live_process(folder)}") from None
    if status == "RUNNING":
        beat = int(run.data.tags.get(HEARTBEAT_TAG, "0"))
        age = time.time() - beat
        if age < LEASE_SECONDS:
            raise ResumeError(
                f"resume={run_id} is RUNNING with a heartbeat {age:.0f} s old: allowed once it is older than "
                f"{LEASE_SECONDS} s (its process may be alive on another machine)"
            )
    return None


def live_process(folder: Path) -> str:
    return f"a live process is working on it ({holder(folder)} holds {folder}): allowed once it has ended"


def load_checkpoint(client: MlflowClient, run: Run, out_dir: Path) -> dict:
    """The run's newest checkpoint: the one in its folder if that is here and readable, else its artifact."""
    run_id, folder = run.info.run_id, run_folder(run)
    candidates = [folder / CHECKPOINT] if folder is not None and (folder / CHECKPOINT).is_file() else []
    with suppress(MlflowException, OSError):
        candidates.append(Path(client.download_artifacts(run_id, f"checkpoint/{CHECKPOINT}", str(out_dir))))
    if not candidates:
        raise ResumeError(f"resume={run_id}: the run has no checkpoint to continue from")
    for path in candidates:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, corrupt or foreign files all fail somewhere in torch.load
            log.warning("checkpoint %s is unreadable (%s)", path, first_line(error))
    raise ResumeError(f"resume={run_id}: its checkpoint is unreadable (truncated or not a checkpoint)")


def resumed(client: MlflowClient, run_id: str, overrides: list[str], out_dir: Path) -> tuple[DictConfig, dict, Run]:
    """The run, its own config (with this command's key=value overrides on top) and its last checkpoint.

    Everything is checked here, before the run is touched: a refused resume leaves it as it was.
    """
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ResumeError(f"resume={run_id}: no such run in the tracking store") from None
    if run.info.status == "FINISHED":
        raise ResumeError(f"resume={run_id} is FINISHED: allowed {RESUMABLE}")
    folder = run_folder(run)
    if folder is not None and folder.resolve() != out_dir.resolve() and folder_in_use(folder):
        raise ResumeError(f"resume={run_id}: {live_process(folder)}")  # before asking for its checkpoint
    cfg = resumed_config(client, run, overrides, out_dir)
    settings: TrainConfig = OmegaConf.to_object(cfg)
    validate(settings)
    checkpoint = load_checkpoint(client, run, out_dir)
    check_checkpoint(settings, checkpoint)
    return cfg, checkpoint, run


def resumed_config(client: MlflowClient, run: Run, overrides: list[str], out_dir: Path) -> DictConfig:
    """The run's saved config.yaml read as today's schema, with `overrides` on top; the seed cannot change."""
    run_id = run.info.run_id
    try:
        config_file = client.download_artifacts(run_id, "config.yaml", str(out_dir))
        saved = OmegaConf.create(migrate_config(OmegaConf.to_container(OmegaConf.load(config_file))))
    except (MlflowException, OSError):
        raise ResumeError(f"resume={run_id}: the run has no config.yaml to continue with") from None
    except Exception as error:  # YAML and OmegaConf errors alike: the file is not a config
        raise ResumeError(f"resume={run_id}: its config.yaml is unreadable ({first_line(error)})") from None
    extra = [o for o in overrides if not o.startswith(("resume=", "hydra", "+hydra"))]
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved, OmegaConf.from_dotlist(extra))
    except OmegaConfBaseException as error:
        raise ResumeError(f"resume={run_id}: cannot apply {extra}: {first_line(error)}") from None
    if cfg.seed != saved.get("seed", cfg.seed):
        raise ResumeError(
            f"seed={cfg.seed} is invalid on resume: allowed the run's own {saved.seed} (its RNG states are in the "
            "checkpoint)"
        )
    cfg.resume = run_id
    return cfg


URL_KEYS = ("mlflow.tracking_uri", "trial.storage")


def with_passwords(cfg: DictConfig, current: DictConfig) -> None:
    """Give the URLs of a resumed run's config, saved with their passwords masked, the passwords this command's
    own config has for the same URLs (a requeued job's are its original command's). Without them (a password
    kept in ~/.pgpass or $PGPASSWORD needs none) the masked URL stays."""
    for key in URL_KEYS:
        saved = OmegaConf.select(cfg, key)
        if isinstance(saved, str):
            OmegaConf.update(cfg, key, restore(saved, OmegaConf.select(current, key)))


def changes(before: DictConfig, after: DictConfig) -> dict[str, tuple[str, str]]:
    """Flat keys whose value a resume changed: {key: (old, new)}."""
    old = flatten(OmegaConf.to_container(before, resolve=True, enum_to_str=True))
    new = flatten(OmegaConf.to_container(after, resolve=True, enum_to_str=True))
    return {k: (old.get(k, "-"), v) for k, v in new.items() if old.get(k) != v and k != "resume"}


def continue_run(client: MlflowClient, settings: TrainConfig, overrides: list[str], out_dir: Path):
    """The resumed run's recorder, config and checkpoint: what its last process left unsent is sent,
    the config changes are recorded (config.yaml, a tag), and the run is RUNNING again."""
    cfg, checkpoint, run = resumed(client, settings.resume, overrides, out_dir)
    with_passwords(cfg, OmegaConf.structured(settings))
    lock = claim(run, out_dir)
    folder = run_folder(run)
    if folder is not None and folder.is_dir():
        send_journal(client, run.info.run_id, Journal(folder))
    saved = OmegaConf.load(out_dir / "config.yaml")
    changed = changes(saved, cfg)
    count = int(run.data.tags.get("resume_count", "0")) + 1
    tags = {
        "resume_count": str(count),
        "resumed_from_step": str(checkpoint["step"]),
        "output_dir": str(out_dir.resolve()),
        "dqn.previous_status": run.info.status,
    }
    if changed:
        text = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
        previous = run.data.tags.get("config_changes")
        tags["config_changes"] = f"{previous}; resume {count}: {text}" if previous else f"resume {count}: {text}"
    for key, value in tags.items():
        client.set_tag(run.info.run_id, key, value)
    if "end_reason" in run.data.tags:
        client.delete_tag(run.info.run_id, "end_reason")
    (out_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
    client.log_artifact(run.info.run_id, str(out_dir / "config.yaml"))
    client.update_run(run.info.run_id, status="RUNNING")
    record = {"run_id": run.info.run_id, "tracking_uri": redact(client.tracking_uri)}
    (out_dir / RUN_RECORD).write_text(json.dumps(record))
    recorder = Recorder(client, run.info.run_id, out_dir)
    recorder.load_history()
    log.info("resuming run %s at step %d%s", run.info.run_id, checkpoint["step"], f" with {changed}" if changed else "")
    log.info("run %s: %s", run.info.run_id, view_at(client.tracking_uri, run.info.experiment_id, run.info.run_id))
    return recorder, cfg, checkpoint, lock


def open_run(cfg: DictConfig, settings: TrainConfig, hydra_cfg: Any, out_dir: Path, requeued: bool = False):
    """The job's recorder (a new run, or the resumed one), its config, its resume checkpoint, and the
    lock on the resumed run's previous folder (None for a new run)."""
    if not settings.mlflow.enabled:
        return Recorder(None, None), cfg, None, None
    root = Path.cwd()
    uri = tracking_uri(settings.mlflow.tracking_uri, root)
    client, experiment_id = open_store(uri, experiment_name(settings.mlflow.experiment_name))
    overrides = list(hydra_cfg.overrides.task)
    if settings.resume:  # a requeued job's overrides are already in its run's config
        return continue_run(client, settings, [] if requeued else overrides, out_dir)
    commit = git_commit(root)
    tags = {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "hydra_overrides": redact(" ".join(overrides)),
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
    if settings.trial.number is not None:  # a seed of an Optuna search's trial (dqn.search)
        tags["trial_number"] = str(settings.trial.number)
    named = group_overrides(overrides, sweep["swept"] if sweep is not None else None)
    run = client.create_run(experiment_id, run_name=run_name(named, settings.seed), tags=tags)
    (out_dir / RUN_RECORD).write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": redact(uri)}))
    address = view_at(uri, experiment_id, run.info.run_id)
    log.info("run %s (%s) tracked at %s; %s", run.info.run_id, run.info.run_name, redact(uri), address)
    return Recorder(client, run.info.run_id, out_dir), cfg, None, None


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
    except trial.Pruned as pruned:  # the run is KILLED and tagged pruned; the worker moves on
        log.warning("%s", pruned)
        return None
    except KeyboardInterrupt as error:
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
    prune = trial.pruning(settings, recorder)  # raises trial.Pruned at an evaluation of a pruned search trial

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


def train(cfg: DictConfig) -> float | None:
    """Train one agent as `cfg` says; return the score of the weights it delivers (the sweep objective).

    Bad input exits 2 with one line and no run. A signal ends the run KILLED with one line saying how
    to resume it. In a multirun, a job that fails or is stopped is recorded as such and the sweep goes
    on (the sweep reports them at its end).
    """
    hydra_cfg = HydraConfig.get()
    redact_logs()
    redact_hydra_files(hydra_cfg)
    try:
        with labelled(hydra_cfg):
            return run_job(cfg, hydra_cfg)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        if stop.requeue is not None:
            stop.requeue()  # submitit requeues the job (or says why not) and ends this process
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return None
        sys.exit(130)
    except Exception:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        log.exception("job %s failed; the sweep goes on", hydra_cfg.job.num)
        return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return train(cfg)


def main() -> None:
    """The command: what Hydra would refuse while composing is refused first, in one line (exit 2); a
    resumed run is kept in its own folder."""
    check_command_line(sys.argv[1:], "dqn.conf", "train", {"": TrainConfig, "hydra.sweeper.": SearchConfig})
    redact_logs()  # Hydra's own lines too (a launcher lists each job's overrides)
    sys.argv[1:] = in_resumed_folder(sys.argv[1:])
    hydra_main()


def in_resumed_folder(args: list[str]) -> list[str]:
    """`args` with `hydra.run.dir=<the run's folder>` added for `resume=<run id>`, so a resumed run keeps one
    folder (its log, checkpoint and journal continue there), unless the command names a folder itself or the
    run's folder is not on this machine. Anything unclear leaves `args` as they are: the resume itself then
    says what is wrong."""
    given = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    if "resume" not in given or "hydra.run.dir" in given or {"-m", "--multirun"} & set(args):
        return args
    uri = tracking_uri(given.get("mlflow.tracking_uri"), Path.cwd())
    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        return args
    try:
        check_reachable(uri, timeout=2.0)  # a server that is down: MLflow's own retries would take minutes
        folder = run_folder(MlflowClient(uri).get_run(given["resume"]))
    except Exception:  # no such run, a store that does not answer: the resume reports it in one line
        return args
    if folder is None or not folder.is_dir() or "'" in str(folder):
        return args
    return [*args, f"hydra.run.dir='{folder}'"]


if __name__ == "__main__":
    main()
