"""Creating the gymnasium environments a run trains and evaluates on."""

from __future__ import annotations

from typing import Any

import gymnasium

SOLVED = 200.0
"""LunarLander's "solved" return: an episode at or above it lands well; the one threshold the package uses."""


def make_env(
    env_id: str, max_episode_steps: int | None = None, render_mode: str | None = None, **kwargs: Any
) -> gymnasium.Env:
    """`gymnasium.make` with an optional episode cap; the cap shows up as `truncated`, never `terminated`.

    The passive env checker is skipped: it only re-checks a registered env's spaces on
    every step, and costs ~20% of LunarLander's step time.
    """
    return gymnasium.make(
        env_id, max_episode_steps=max_episode_steps, render_mode=render_mode, disable_env_checker=True, **kwargs
    )
