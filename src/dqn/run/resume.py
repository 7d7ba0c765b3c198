"""Continuing a run: `resume=<run id>` by hand, or a job SLURM requeued. Everything is checked before the run is
touched (a refused resume leaves it as it was); a live process keeps its run, a dead one's run is taken over."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

import torch
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dqn.config import (
    TrainConfig,
    first_line,
    validate,
)
from dqn.migrations import migrate_config
from dqn.redaction import restore
from dqn.run.commands import view_at
from dqn.state import check_checkpoint
from dqn.tracking.recorder import HEARTBEAT_TAG, Journal, Recorder, send_journal
from dqn.tracking.store import (
    LEASE_SECONDS,
    FolderLock,
    check_reachable,
    flatten,
    folder_in_use,
    holder,
    redact,
    sqlite_path,
    tracking_uri,
)

log = logging.getLogger("dqn")


CHECKPOINT = "checkpoint.pt"

RUN_RECORD = "run.json"

RESUMABLE = "a KILLED or FAILED run, or a RUNNING one whose process is gone"


class ResumeError(ValueError):
    """`resume=` names a run that cannot be continued."""


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


class OpenedRun(NamedTuple):
    """What a job trains into: a new run (`checkpoint` and `claimed` None) or a resumed one."""

    recorder: Recorder
    cfg: DictConfig
    """The job's config: for a resumed run, its own config with this command's changes."""
    checkpoint: dict | None
    """The training checkpoint to continue from."""
    claimed: FolderLock | None
    """The lock on the resumed run's previous folder, held while this job works on the run."""


def continue_run(client: MlflowClient, settings: TrainConfig, overrides: list[str], out_dir: Path) -> OpenedRun:
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
    return OpenedRun(recorder, cfg, checkpoint, lock)


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
