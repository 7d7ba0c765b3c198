"""`hydra/sweeper=race`: the class Hydra finds by scanning `hydra_plugins`; the race is `dqn.racing`.

Hydra imports every module under `hydra_plugins` at start-up, for every command, so this one imports
nothing heavy: the race loads only when a race runs.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RaceSweeper(Sweeper):
    """A grid raced over seeds; its settings are `dqn.config.RaceConfig`."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.race: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from dqn.racing.sweeper import RaceSweep

        self.race = RaceSweep(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.race.sweep(arguments)
