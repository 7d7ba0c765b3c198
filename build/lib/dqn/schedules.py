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


def make_schedule(kind: str, start: float, end: float, decay_steps: int) -> Schedule:
    """The schedule a config names (`schedule.kind`)."""
    if kind == "constant":
        return constant(start)
    if kind == "linear":
        return linear(start, end, decay_steps)
    if kind == "exponential":
        return exponential(start, end, decay_steps)
    raise ValueError(f"schedule.kind={kind!r}: allowed constant, linear, exponential")
