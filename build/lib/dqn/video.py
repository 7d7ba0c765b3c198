"""Filming one greedy episode to an MP4, to see what a policy does (land, crash, hover until the time limit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium
import imageio.v2 as imageio

from dqn.environment import make_env
from dqn.estimator import ActionValueEstimator
from dqn.policy import Episode, run_episode


def record_episode(
    estimator: ActionValueEstimator,
    env_id: str,
    seed: int,
    path: Path,
    max_episode_steps: int | None = None,
    fps: int = 50,
) -> tuple[Episode, int]:
    """Play one greedy episode from start seed `seed`, write it to `path` as an MP4; return it and its frame count.

    Frames are `env.render()` images (600x400 RGB for LunarLander), one after the reset and one after each
    step, so a video holds the episode's length + 1 frames; 50 fps is LunarLander's own frame rate. They are
    encoded as H.264 (libx264, yuv420p) by imageio's FFMPEG plugin with the ffmpeg binary bundled in the
    imageio-ffmpeg wheel, so no system codecs are needed. macro_block_size=8 keeps 600x400 unscaled (the
    default 16 would resize it to 608x400). Frames stream to the encoder instead of piling up in memory
    (a 1000-step episode is 700 MB of frames). The episode is the same as `policy.run_episode` plays.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    env = make_env(env_id, max_episode_steps, render_mode="rgb_array")
    try:
        with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=8) as writer:
            filmed = Filmed(env, writer)
            episode = run_episode(estimator, filmed, seed=seed)
    finally:
        env.close()
    return episode, filmed.frames


class Filmed(gymnasium.Wrapper):
    """Sends the rendered frame to `writer` after every reset and step, and counts them."""

    def __init__(self, env: gymnasium.Env, writer: Any) -> None:
        super().__init__(env)
        self.writer, self.frames = writer, 0

    def reset(self, **kwargs: Any):
        result = super().reset(**kwargs)
        self._film()
        return result

    def step(self, action):
        result = super().step(action)
        self._film()
        return result

    def _film(self) -> None:
        self.writer.append_data(self.env.render())
        self.frames += 1
