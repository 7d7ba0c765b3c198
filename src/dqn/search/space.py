"""A search space in Hydra's sweep syntax, as Optuna distributions, and Optuna's values back as overrides.

`lr: tag(log, interval(1e-4, 3e-3))` is a log-uniform float, `batch_size: choice(32, 64)` a categorical,
`n_step: range(1, 5)` the integers 1 to 4 (Hydra's range excludes its end). Parsed with Hydra's own
OverridesParser, as hydra-optuna-sweeper does; anything that is not a sweep is a fixed override.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from dqn.config import ConfigError, first_line

Space = dict[str, BaseDistribution]


def parse_space(params: Mapping[str, str], arguments: Sequence[str]) -> tuple[Space, dict[str, str], list[str]]:
    """Split `params` and the command line's overrides into Optuna distributions (sweeps: choice, range,
    interval, with `tag(log, ...)` for a log scale) and fixed overrides, as hydra-optuna-sweeper does."""
    lines = [f"{key}={value}" for key, value in params.items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except Exception as error:  # Hydra's grammar errors span lines
        raise ConfigError(f"hydra.sweeper.params cannot be parsed: {first_line(error)}") from None
    space, declared, fixed = {}, {}, []
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        name = override.get_key_element()
        text = override.input_line.split("=", 1)[1]
        if name.lstrip("+~") == "seed":
            raise ConfigError(
                f"hydra.sweeper.params.seed={text} is invalid: the seeds are seed..seed+seeds_per_trial-1"
            )
        space[name], declared[name] = override, text
    if not space:
        raise ConfigError(
            "hydra.sweeper.params is empty: allowed a search space such as "
            "lr='tag(log, interval(1e-4, 3e-3))' batch_size='choice(32, 64, 128)'"
        )
    return {name: distribution(o, declared[name]) for name, o in space.items()}, declared, fixed


def distribution(override: Override, text: str) -> BaseDistribution:
    name = override.get_key_element()
    try:
        if override.is_choice_sweep() or (override.is_range_sweep() and override.value().shuffle):
            return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        if override.is_range_sweep():
            values = list(override.sweep_iterator())
            step = override.value().step
            if all(isinstance(v, int) for v in values):
                return IntDistribution(values[0], values[-1], step=int(step))
            return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
        interval = override.value()
        log_scale = "log" in interval.tags
        if isinstance(interval.start, int) and isinstance(interval.end, int):
            return IntDistribution(interval.start, interval.end, log=log_scale)
        return FloatDistribution(float(interval.start), float(interval.end), log=log_scale)
    except (ValueError, IndexError) as error:
        raise ConfigError(f"search space {name}={text} is invalid: {first_line(error)}") from None


def bounds(distribution: BaseDistribution) -> list[Any]:
    """The values that decide whether a whole dimension is legal: every choice, both ends of a range."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def grid_of(space: Space, declared: Mapping[str, str]) -> dict[str, list[Any]]:
    """The grid sampler's points: each choice, each step of a range; an interval has no grid."""
    grid = {}
    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            grid[name] = list(d.choices)
        elif d.step is not None:
            count = int(round((d.high - d.low) / d.step)) + 1
            grid[name] = [d.low + i * d.step for i in range(count)]
        else:
            raise ConfigError(
                f"search space {name}={declared[name]} is invalid with hydra.sweeper.sampler=grid: "
                "allowed choice(...) or range(...)"
            )
    return grid


def override_value(value: Any) -> str:
    """`value` as a Hydra override's right-hand side."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    return value if re.fullmatch(r"[\w.\-/]+", value) else quoted(value)


def quoted(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"
