"""An Optuna search's definition: what it searches (`Search`, checked from the config before any run), its
sampler seeded per trial, its default name and storage, and its study, opened or created.

Read by the sweeper that runs the search, the results that describe it, and the sweep callback that
refuses a bad one before the parent run exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from dqn.config import ConfigError, SearchConfig, first_line, require_sweeper
from dqn.search.space import bounds, grid_of, override_value, parse_space, quoted
from dqn.search.trial import PRUNERS, rdb_storage
from dqn.sweep_protocol import composed_job, config_overrides
from dqn.tracking.store import redact, sqlite_path, store_lock, tracking_uri

SAMPLERS: dict[str, Callable[[SearchConfig, dict[str, list[Any]], int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda s, grid, seed: optuna.samplers.TPESampler(n_startup_trials=s.n_startup_trials, seed=seed),
    "random": lambda s, grid, seed: optuna.samplers.RandomSampler(seed=seed),
    # its seed shuffles the grid, whose order must hold for the whole study: `sampler_seed` alone
    "grid": lambda s, grid, seed: optuna.samplers.GridSampler(grid, seed=s.sampler_seed),
}
"""Every sampler by the name a search's `sampler` setting takes, given the settings, the grid (choice and
range params) and the trial's seed: a new sampler is its entry here."""
SEARCH = "search"  # study user attr: what the study searches (`Search.signature`)
INTERRUPTED = "interrupted"  # trial user attr: why a FAIL trial does not count (it is queued again)
SCORES = "seed_scores"  # trial user attr: {seed: final score}


@dataclass(frozen=True)
class Search:
    """A checked search: the space Optuna samples, the overrides every job shares, the seeds, the study."""

    settings: SearchConfig
    space: dict[str, BaseDistribution]
    declared: dict[str, str]  # each param as written, e.g. {"lr": "tag(log, interval(1e-4, 3e-3))"}
    fixed: list[str]  # the other overrides, given to every job
    seeds: list[int]
    study_name: str
    storage: str
    n_trials: int
    grid: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def signature(self) -> dict[str, Any]:
        """What makes two commands the same search: continuing a study with another one would mix objectives."""
        return {"space": self.declared, "seeds": self.seeds, "overrides": sorted(config_overrides(self.fixed))}

    @property
    def pruner(self) -> dict[str, Any]:
        s = self.settings
        return {"kind": s.pruner, "n_startup_trials": s.pruner_startup_trials, "n_warmup_steps": s.pruner_warmup_steps}

    @property
    def tags(self) -> dict[str, str]:
        """The study's parent MLflow run's tags."""
        return {
            "dqn.search": "optuna",
            "study_name": self.study_name,
            "optuna_storage": redact(self.storage),
            "sampler": self.settings.sampler,
            "sampler_seed": str(self.settings.sampler_seed),
            "pruner": self.settings.pruner,
            "search_space": json.dumps(self.declared),
            "seeds_per_trial": str(len(self.seeds)),
            "n_trials": str(self.n_trials),
        }

    def jobs(self, trial: optuna.Trial | FrozenTrial) -> list[list[str]]:
        """One job per seed: the shared overrides, the trial's params, the seed, and where to report."""
        params = [f"{name}={override_value(trial.params[name])}" for name in self.space]
        where = [
            f"trial.study={quoted(self.study_name)}",
            f"trial.storage={quoted(self.storage)}",
            f"trial.number={trial.number}",
        ]
        return [[*self.fixed, *params, f"seed={seed}", *where] for seed in self.seeds]

    def sampler(self, index: int) -> optuna.samplers.BaseSampler:
        """The sampler that draws the study's `index`-th counted trial, seeded from `sampler_seed` and `index`:
        a draw depends on the finished trials before it, not on which command asks it nor on how many asks
        this process has made (a resumed study draws as an uninterrupted one would). The grid sampler
        takes `sampler_seed` alone: it gives the first trials the grid's points in the order that seed
        shuffles them, by trial number."""
        s = self.settings
        seed = int(np.random.SeedSequence([s.sampler_seed, index]).generate_state(1)[0])
        return SAMPLERS[s.sampler](s, self.grid, seed)


def check_search(config: DictConfig, loader: Any) -> Search:
    """The search `config.hydra.sweeper` describes; raises ConfigError, in one line, on anything a job would
    trip on: unknown sampler or pruner, counts below 1, an empty space, a bound the training schema refuses
    (each choice and both ends of each range are composed with `loader` and validated), a storage that
    cannot be used, or a study of that name that searches something else."""
    settings: SearchConfig = OmegaConf.to_object(OmegaConf.merge(SearchConfig, config.hydra.sweeper))
    check_settings(settings)
    if settings.sampler_seed is None:  # a search is a draw: the same command draws the same trials
        settings = replace(settings, sampler_seed=config.seed)
    space, declared, fixed = parse_space(settings.params, list(config.hydra.overrides.task))
    grid = grid_of(space, declared) if settings.sampler == "grid" else {}
    for name, distribution in space.items():
        for value in bounds(distribution):
            check_value(config, loader, fixed, name, declared[name], value)
    fixed = [o for o in fixed if not o.startswith("seed=")]  # the seeds are the search's own
    seeds = [config.seed + i for i in range(settings.seeds_per_trial)]
    storage = settings.storage or default_storage(config)
    search = Search(settings, space, declared, fixed, seeds, "", storage, settings.n_trials, grid)
    name = settings.study_name or default_study_name(search)
    require_sweeper(
        bool(re.fullmatch(r"[\w.\-]{1,100}", name)), "study_name", name, "1 to 100 letters, digits, '_', '.', '-'"
    )
    require_sweeper(
        storage != tracking_uri(config.mlflow.tracking_uri, Path.cwd()),
        "storage",
        redact(storage),
        "a database of its own (Optuna's and MLflow's tables clash in one)",
    )
    return replace(search, study_name=name)


def check_settings(s: SearchConfig) -> None:
    require_sweeper(s.sampler in SAMPLERS, "sampler", s.sampler, ", ".join(SAMPLERS))
    require_sweeper(s.pruner in PRUNERS, "pruner", s.pruner, ", ".join(PRUNERS))
    for key in ("n_trials", "seeds_per_trial", "n_jobs", "n_startup_trials"):
        require_sweeper(getattr(s, key) >= 1, key, getattr(s, key), "an integer >= 1")
    for key in ("pruner_startup_trials", "pruner_warmup_steps"):
        require_sweeper(getattr(s, key) >= 0, key, getattr(s, key), "an integer >= 0")
    require_sweeper(
        s.sampler_seed is None or s.sampler_seed >= 0, "sampler_seed", s.sampler_seed, "null or an integer >= 0"
    )


def check_value(config: DictConfig, loader: Any, fixed: list[str], name: str, text: str, value: Any) -> None:
    """Compose a job with `name` at `value`, as the launcher will, and validate it as training would."""
    override = f"{name}={override_value(value)}"
    composed_job(config, loader, [*fixed, override], f"search space {name}={text}: {override}")


def default_study_name(search: Search) -> str:
    """`search-` and a hash of what decides the trials: the search's signature, and the sampler and pruner
    with their settings (another sampler seed is another draw of the search, not more of the same one).
    Not n_trials: raising it continues the study."""
    s = search.settings
    strategy = {"sampler": s.sampler, "sampler_seed": s.sampler_seed, "pruner": search.pruner}
    if s.sampler == "tpe":
        strategy["n_startup_trials"] = s.n_startup_trials
    text = json.dumps({**search.signature, **strategy}, sort_keys=True)
    return f"search-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def default_storage(config: DictConfig) -> str:
    """SQLite beside the embedded MLflow store (`mlruns/optuna.db`); with a server, in ./mlruns.

    Not MLflow's own database: Optuna's and MLflow's schemas both keep an `alembic_version` table."""
    store = sqlite_path(tracking_uri(config.mlflow.tracking_uri, Path.cwd()))
    folder = store.parent if store is not None else Path.cwd() / "mlruns"
    return f"sqlite:///{(folder / 'optuna.db').resolve()}"


def open_study(search: Search) -> optuna.Study:
    """The search's study, created if new; ConfigError if the storage cannot be used or a study of that
    name searches something else."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        path = sqlite_path(search.storage)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        with store_lock(search.storage):  # two processes creating a SQLite storage's tables collide
            storage = rdb_storage(search.storage)
            study = optuna.create_study(
                storage=storage,
                study_name=search.study_name,
                sampler=search.sampler(0),
                direction="maximize",
                load_if_exists=True,
            )
            known = study.user_attrs.get(SEARCH)
            if known is None:
                study.set_user_attr(SEARCH, search.signature)
    except Exception as error:  # SQLAlchemy, a driver, the OS: all one line
        raise ConfigError(
            f"hydra.sweeper.storage={redact(search.storage)} cannot be used: {type(error).__name__}: "
            f"{redact(first_line(error))}"
        ) from None
    if known is not None and known != json.loads(json.dumps(search.signature)):
        raise ConfigError(
            f"hydra.sweeper.study_name={search.study_name} is a study of another search ({json.dumps(known)}): "
            "allowed the same search, or another study_name"
        )
    return study
