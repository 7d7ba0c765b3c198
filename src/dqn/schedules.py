"""Exploration schedules: epsilon as a pure function of the env step."""

from __future__ import annotations

from collections.abc import Callable

Schedule = Callable[[int], float]


def constant(value: float) -> Schedule:
    """The exercise's fixed epsilon (0.3)."""
    return lambda step: value


def linear(start: float, end: float, decay_steps: int) -> Schedule:
    """From `start` at step 0 straight down to `end` at `decay_steps`, then flat."""
    return lambda step: start + (end - start) * min(step / decay_steps, 1.0)


def exponential(start: float, end: float, half_life: int) -> Schedule:
    """`end` plus a distance to it that halves every `half_life` steps."""
    return lambda step: end + (start - end) * 0.5 ** (step / half_life)


SCHEDULES: dict[str, Callable[[float, float, int], Schedule]] = {
    "constant": lambda start, end, decay_steps: constant(start),
    "linear": linear,
    "exponential": exponential,
}
"""Every schedule by the name `schedule.kind` takes (dqn.config builds its choices from these keys): a new
one is a function here, its entry, and a conf/schedule/<name>.yaml."""


def make_schedule(kind: str, start: float, end: float, decay_steps: int) -> Schedule:
    """The schedule a config names (`schedule.kind`)."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule.kind={kind!r}: allowed {', '.join(SCHEDULES)}")
    return SCHEDULES[kind](start, end, decay_steps)
