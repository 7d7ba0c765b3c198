"""`hydra/sweeper=optuna`: the class Hydra finds by scanning `hydra_plugins`; the search is `dqn.search`.

Hydra imports every module under `hydra_plugins` at start-up, for every command, so this one imports
nothing heavy: Optuna, MLflow and the search load only when a search runs.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """An Optuna search over the training config; its settings are `dqn.config.SearchConfig`."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.search: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from dqn.search.sweeper import OptunaSearch

        self.search = OptunaSearch(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
