"""What every layer knows about a sweep: the files in its folder (`sweep.json`, written by the launching
process for its jobs; `STOP`, a stop request) and how a job's overrides name the config it shares with
its other seeds, and how a sweeper composes and checks a job's config before launching it. Core (it imports
only dqn.config): jobs, sweepers, the report and the commands all read it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from dqn.config import ConfigError, first_line, validate

SWEEP_FILE = "sweep.json"
STOP_FILE = "STOP"
SUPERSEDED = "superseded"  # run tag "true": a job of an interrupted search trial, whose params ran again
SWEEP_TAGS = ("dqn.role", "sweep_id", "sweep_dir")
PLUMBING = ("mlflow.", "hydra", "+hydra", "~", "resume=", "trial.")


def config_overrides(overrides: list[str]) -> list[str]:
    """The overrides that change what is trained, not where it is tracked or how Hydra runs it."""
    return [o for o in overrides if not o.startswith(PLUMBING)]


def group_overrides(overrides: list[str], swept: Iterable[str] | None = None) -> list[str]:
    """The overrides that make a job's config, shared with its other seeds: its overrides minus the seed, sorted.

    Within a sweep only the swept keys count (`batch_size=256,lr=0.0005`), not the overrides every
    job shares; a sweep over seeds alone (`lr=0.0005 seed='range(10)'`) is named by those shared ones.
    """
    kept = [o for o in config_overrides(overrides) if not o.startswith("seed=")]
    if swept is not None:
        swept = set(swept)
        kept = [o for o in kept if o.split("=", 1)[0].lstrip("+") in swept] or kept
    return sorted(kept)


def group_name(overrides: list[str], swept: Iterable[str] | None = None) -> str:
    """The `group` tag: the config a job shares with its other seeds (`group_overrides`), full values."""
    return ",".join(group_overrides(overrides, swept)) or "defaults"


def swept_keys(config: DictConfig) -> list[str]:
    """Keys the sweep varies: sweep overrides on the command line and in the sweeper's `params`. A key set to
    one value there (`experiment: exercise`) is fixed, not swept: it names no group."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [*config.hydra.overrides.task, *(f"{key}={value}" for key, value in params.items())]
    parsed = OverridesParser.create().parse_overrides(arguments)
    return sorted({o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()})


def sweep_stopping(sweep_dir: Path) -> bool:
    """Whether the sweep's launcher was asked to stop (jobs poll this at every episode end)."""
    return (sweep_dir / STOP_FILE).exists()


def read_sweep(sweep_dir: Path) -> dict[str, str] | None:
    """What the launching process wrote about the sweep's parent run, if anything."""
    path = sweep_dir / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def composed_job(config: DictConfig, loader: Any, overrides: list[str], label: str) -> DictConfig:
    """A job's config as the launcher will compose it with `overrides`, validated as training will; otherwise
    ConfigError in one line that starts with `label` (what was being checked: a search's value, a race's config)."""
    try:
        job = loader.load_sweep_config(config, overrides)
        with open_dict(job):
            del job["hydra"]
        validate(OmegaConf.to_object(job))
    except ConfigError as error:
        raise ConfigError(f"{label} reaches {error}") from None
    except Exception as error:  # a key the schema lacks, a type it refuses: Hydra's and OmegaConf's errors
        raise ConfigError(f"{label} fails: {first_line(error)}") from None
    return job
