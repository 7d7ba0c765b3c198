"""Acting with a Q-network: epsilon-greedy actions while training, greedy episodes to evaluate it."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import numpy as np
import torch

from dqn.estimator import ActionValueEstimator


def select_action(
    env: gymnasium.Env,
    estimator: ActionValueEstimator,
    observation: np.ndarray,
    epsilon: float,
    rng: np.random.Generator | None = None,
) -> int:
    """With probability epsilon a random action from `env.action_space`, else the greedy one."""
    u = rng.random() if rng is not None else np.random.uniform()
    if u < epsilon:
        return int(env.action_space.sample())
    return estimator.greedy_action(observation)


@dataclass
class Episode:
    """How one greedy episode went."""

    score: float
    length: int
    truncated: bool
    """Ended by the time limit (the hovering lander), not by landing or crashing."""
    last_reward: float
    """LunarLander gives +100 for coming to rest and -100 for a crash on the last step."""


def run_episode(estimator: ActionValueEstimator, env: gymnasium.Env, seed: int | None = None) -> Episode:
    """Play one greedy episode on `env` (reset with `seed` if given)."""
    observation, _ = env.reset(seed=seed)
    score, length, reward = 0.0, 0, 0.0
    terminated = truncated = False
    while not (terminated or truncated):
        observation, reward, terminated, truncated, _ = env.step(estimator.greedy_action(observation))
        score += float(reward)
        length += 1
    return Episode(score, length, truncated and not terminated, float(reward))


def evaluate(estimator: ActionValueEstimator, env: gymnasium.Env) -> float:
    """The exercise's evaluation: one greedy episode (rendered if the env renders), its score."""
    return run_episode(estimator, env).score


def evaluate_episodes(estimator: ActionValueEstimator, env: gymnasium.Env, episodes: int, seed: int) -> list[Episode]:
    """`episodes` greedy episodes with start seeds seed, seed+1, ...: every evaluation of a
    run sees the same starts, so changes between evaluations are the policy's, not the dice's."""
    with torch.inference_mode():
        return [run_episode(estimator, env, seed=seed + i) for i in range(episodes)]
