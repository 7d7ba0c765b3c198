"""A race as the command line describes it, checked before any run exists, and its one parent MLflow run.

The grid is Hydra's sweep syntax (`hydra.sweeper.params` and the command line's sweeps), expanded as
Hydra's basic sweeper does. Every grid point is composed and validated as its jobs will be, so a bad value
is refused in one line. A race is known by what its jobs train (its signature: the composed configs,
seed aside), so the same command, run again, continues the race's parent run and reuses its finished jobs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from dqn.config import ConfigError, RaceConfig, first_line, require_sweeper
from dqn.racing.elimination import Rules
from dqn.sweep_protocol import composed_job
from dqn.tracking.store import folder_in_use

NOT_TRAINING = ("mlflow", "resume", "trial", "seed")  # keys that do not change what a job trains


@dataclass(frozen=True)
class Plan:
    """A checked race: its rules, each config's overrides, the overrides every job shares, the first seed."""

    rules: Rules
    configs: list[list[str]]
    fixed: list[str]
    first_seed: int
    signature: str

    def job(self, config: int, seed: int) -> list[str]:
        """The overrides of config `config`'s job on its `seed`-th seed."""
        return [*self.fixed, *self.configs[config], f"seed={self.first_seed + seed}"]

    @property
    def tags(self) -> dict[str, str]:
        r = self.rules
        return {
            "dqn.racing": "race",
            "race_signature": self.signature,
            "race_rules": json.dumps(
                {
                    "first_seeds": r.first_seeds,
                    "seeds_per_round": r.seeds_per_round,
                    "max_seeds": r.max_seeds,
                    "seed_budget": r.budget(len(self.configs)),
                    "alpha": r.alpha,
                    "first_seed": self.first_seed,
                }
            ),
        }


def check_rules(s: RaceConfig) -> Rules:
    for key in ("first_seeds", "seeds_per_round", "max_seeds"):
        require_sweeper(getattr(s, key) >= 1, key, getattr(s, key), "an integer >= 1")
    require_sweeper(
        s.max_seeds >= s.first_seeds, "max_seeds", s.max_seeds, f"an integer >= first_seeds ({s.first_seeds})"
    )
    require_sweeper(0 < s.alpha < 1, "alpha", s.alpha, "a float in (0, 1)")
    return Rules(s.first_seeds, s.seeds_per_round, s.max_seeds, s.seed_budget, s.alpha)


def grid(params: dict[str, str], arguments: list[str]) -> tuple[list[list[str]], list[str]]:
    """Each grid point's overrides, and the overrides every job shares; ConfigError on a seed sweep, a
    continuous range, or a grid of fewer than 2 points."""
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as error:  # Hydra's grammar errors span lines
        raise ConfigError(f"hydra.sweeper.params cannot be parsed: {first_line(error)}") from None
    axes, fixed = [], []
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key, text = override.get_key_element(), override.input_line.split("=", 1)[1]
        require_sweeper(key.lstrip("+~") != "seed", f"params.{key}", text, "no seed sweep: the race gives the seeds")
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # an interval has no points to race
            require_sweeper(False, f"params.{key}", text, "a list, choice(...) or range(...): a race needs a grid")
        axes.append([f"{key}={value}" for value in values])
    points = [list(point) for point in itertools.product(*axes)]
    require_sweeper(
        len(points) >= 2, "params", dict(params) or "{}", "a grid of at least 2 configs (e.g. lr: 1e-4,1e-3)"
    )
    return points, fixed


def check_race(config: DictConfig, loader: Any, arguments: list[str]) -> Plan:
    """The race `config.hydra.sweeper` and the command line's `arguments` describe; ConfigError, in one line,
    on a bad rule, a grid that is not one, a budget below the first round, or a config a job would refuse."""
    settings: RaceConfig = OmegaConf.to_object(OmegaConf.merge(RaceConfig, config.hydra.sweeper))
    rules = check_rules(settings)
    configs, fixed = grid(dict(settings.params), arguments)
    first = len(configs) * rules.first_seeds
    require_sweeper(
        settings.seed_budget is None or settings.seed_budget >= first,
        "seed_budget",
        settings.seed_budget,
        f"null or at least {first} (first_seeds x {len(configs)} configs)",
    )
    fixed = [o for o in fixed if not o.startswith("seed=")]  # the seeds are the race's own
    trains = []
    for point in configs:
        overrides = [*fixed, *point, f"seed={config.seed}"]
        job = composed_job(config, loader, overrides, f"race config {' '.join(overrides)}")
        trains.append({k: v for k, v in OmegaConf.to_container(job, resolve=True).items() if k not in NOT_TRAINING})
    digest = hashlib.sha256(json.dumps(trains, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Plan(rules, configs, fixed, int(config.seed), f"race-{digest}")


def race_parent(client: MlflowClient, experiment_id: str, plan: Plan, tags: dict[str, str]) -> Run:
    """The race's parent run: the latest one with the same signature, RUNNING again (its finished jobs are
    reused), else a new one. ConfigError while another command is running that race."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.race_signature = '{plan.signature}' and tags.`dqn.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        tags = {**tags, **plan.tags, "race_dir": tags["sweep_dir"]}
        return client.create_run(experiment_id, run_name=f"race {tags['sweep_id']}", tags=tags)
    run = runs[0]
    folder = Path(run.data.tags.get("race_dir", run.data.tags.get("sweep_dir", "/nonexistent")))
    if run.info.status == "RUNNING" and folder_in_use(folder):
        raise ConfigError(
            f"hydra.sweeper: race {plan.signature} is running in {folder} (run {run.info.run_id}): allowed one "
            "command per race; stop it, or change the race"
        )
    client.update_run(run.info.run_id, status="RUNNING")
    for key in ("end_reason", "race_end", "report_error"):
        if key in run.data.tags:
            client.delete_tag(run.info.run_id, key)
    for key, value in {**plan.tags, "race_dir": tags["sweep_dir"]}.items():
        client.set_tag(run.info.run_id, key, value)
    return client.get_run(run.info.run_id)
