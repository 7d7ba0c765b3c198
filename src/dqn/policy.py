"""Acting with a Q-network: epsilon-greedy actions while training, greedy episodes to evaluate it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium
import numpy as np
import torch

from dqn.environment import SOLVED
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


LANDED_REWARD = 100.0
"""LunarLander's last reward when the lander comes to rest; a crash or flying off gives -100."""


@dataclass(frozen=True)
class Summary:
    """How a set of greedy episodes went: how many, their returns, and the fraction of them with each result."""

    episodes: int
    return_mean: float
    return_std: float
    """Sample std (ddof=1; NaN for one episode)."""
    return_min: float
    return_max: float
    success_rate: float
    """Share of the episodes with a return >= SOLVED."""
    length_mean: float
    landed: float
    crashed: float
    timed_out: float

    def metrics(self, prefix: str) -> dict[str, float]:
        """As MLflow metrics: <prefix>return_mean, ..., <prefix>timed_out."""
        return {f"{prefix}{key}": float(value) for key, value in asdict(self).items()}


def outcome(episode: Episode) -> str:
    """`landed` (came to rest: +100 last), `crashed` (terminated otherwise: crash or flying off, -100) or
    `timed_out` (truncated by the time limit: the hovering lander). The landed/crashed split is LunarLander's."""
    if episode.truncated:
        return "timed_out"
    return "landed" if episode.last_reward == LANDED_REWARD else "crashed"


def summarize_episodes(episodes: list[Episode]) -> Summary:
    """Return statistics (sample std), mean length and the share of each outcome: what both the final
    evaluation of training and `dqn-evaluate` report."""
    returns = np.array([e.score for e in episodes])
    outcomes = [outcome(e) for e in episodes]
    share = {kind: outcomes.count(kind) / len(episodes) for kind in ("landed", "crashed", "timed_out")}
    return Summary(
        episodes=len(episodes),
        return_mean=float(returns.mean()),
        return_std=float(returns.std(ddof=1)) if returns.size > 1 else float("nan"),
        return_min=float(returns.min()),
        return_max=float(returns.max()),
        success_rate=float(np.mean(returns >= SOLVED)),
        length_mean=float(np.mean([e.length for e in episodes])),
        **share,
    )
