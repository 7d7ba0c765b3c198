"""A training run's state as one typed object: what a checkpoint holds and how a run continues from one.

`TrainingState` holds everything a run needs to continue exactly as if it had never stopped: both
networks, the optimizer, the replay buffer, every RNG, the step counters, the best evaluation's
weights and the training clock. `state_dict()` is the checkpoint (plain tensors, numbers and numpy
RNG states, so it loads with torch's weights-only mode); older checkpoints are read through
`dqn.migrations.migrate_checkpoint`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
import torch

from dqn.buffer import BUFFERS, ExperienceBuffer
from dqn.config import Device, TrainConfig
from dqn.environment import make_env
from dqn.estimator import ActionValueEstimator
from dqn.migrations import CHECKPOINT_VERSION, migrate_checkpoint


class CheckpointMismatch(ValueError):
    """A checkpoint this config cannot continue (other shapes, or not a checkpoint at all)."""


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch; return the generator the loop draws from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(device: Device) -> str:
    if device is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.value


def build_estimator(cfg: TrainConfig, env: gymnasium.Env) -> ActionValueEstimator:
    """The Q-network and optimizer `cfg` describes (the benchmarks build theirs here too)."""
    network = cfg.network
    return ActionValueEstimator(
        env,
        network.hidden_sizes,
        network.activation.value,
        network.dueling,
        network.layer_norm,
        lr=cfg.lr,
        adam_eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        loss=cfg.loss.value,
        max_grad_norm=cfg.max_grad_norm,
        device=resolve_device(cfg.device),
    )


class Stopwatch:
    """Training seconds: wall time minus the time spent in evaluation."""

    def __init__(self, already: float = 0.0) -> None:
        self.start, self.paused_seconds = time.perf_counter() - already, 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused_seconds

    def exclude(self, since: float) -> None:
        self.paused_seconds += time.perf_counter() - since


def shapes(cfg: TrainConfig, env: gymnasium.Env) -> dict[str, Any]:
    """What a checkpoint's tensors depend on; resuming under other values cannot work."""
    return {
        "env.id": cfg.env.id,
        "observation_shape": list(env.observation_space.shape),
        "n_actions": int(env.action_space.n),
        "network.hidden_sizes": list(cfg.network.hidden_sizes),
        "network.activation": cfg.network.activation.value,
        "network.dueling": cfg.network.dueling,
        "network.layer_norm": cfg.network.layer_norm,
        "buffer.capacity": cfg.buffer.capacity,
    }


CHECKPOINT_KEYS = ("shapes", "step", "last_eval", "train_seconds", "q", "q_target", "optimizer", "buffer", "rng")


def check_shapes(cfg: TrainConfig, state: dict[str, Any], env: gymnasium.Env) -> None:
    """Refuse, naming the key, a checkpoint (already migrated) this config cannot continue."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointMismatch(f"the checkpoint lacks {', '.join(missing)}: it is not a training checkpoint")
    expected = shapes(cfg, env)
    for key, value in state["shapes"].items():
        if expected.get(key) != value:
            raise CheckpointMismatch(f"checkpoint made with {key}={value!r}; this config has {expected.get(key)!r}")


def check_checkpoint(cfg: TrainConfig, state: dict[str, Any]) -> None:
    """`check_shapes` before anything is built: a resume is refused before its run is touched."""
    env = make_env(cfg.env.id, cfg.env.max_episode_steps, **cfg.env.kwargs)
    try:
        check_shapes(cfg, migrate_checkpoint(state), env)
    finally:
        env.close()


@dataclass
class TrainingState:
    """Everything that changes while a run trains; built for a config by `TrainingState.start`."""

    cfg: TrainConfig
    env: gymnasium.Env
    q: ActionValueEstimator
    q_target: ActionValueEstimator
    buffer: ExperienceBuffer
    rng: np.random.Generator
    step: int = 0
    last_eval: int = -1
    """The step of the latest greedy evaluation (-1: none yet)."""
    best_score: float = -math.inf
    best_weights: dict[str, torch.Tensor] | None = None
    """The online network's weights at the best evaluation so far (what keep_best delivers)."""
    clock: Stopwatch = field(default_factory=Stopwatch)

    @classmethod
    def start(cls, cfg: TrainConfig) -> TrainingState:
        """A fresh run: every RNG seeded from `cfg.seed`, the networks built, the buffer empty."""
        rng = seed_everything(cfg.seed)
        env = make_env(cfg.env.id, cfg.env.max_episode_steps, **cfg.env.kwargs)
        env.action_space.seed(cfg.seed)
        q = build_estimator(cfg, env)
        buffer = BUFFERS[cfg.buffer.kind.value](cfg.buffer.capacity, env.observation_space.shape, (1,), rng=rng)
        return cls(cfg, env, q, q.copy(), buffer, rng)

    def first_observation(self, resumed: bool) -> np.ndarray:
        """A fresh run resets with its seed; a resumed one without, so the restored env RNG gives the
        start an unbroken run would have had."""
        observation, _ = self.env.reset() if resumed else self.env.reset(seed=self.cfg.seed)
        return observation

    def state_dict(self) -> dict[str, Any]:
        return {
            "format_version": CHECKPOINT_VERSION,
            "shapes": shapes(self.cfg, self.env),
            "step": self.step,
            "last_eval": self.last_eval,
            "train_seconds": self.clock.seconds(),
            "q": self.q.network.state_dict(),
            "q_target": self.q_target.network.state_dict(),
            "optimizer": self.q.optimizer.state_dict(),
            "best": {"score": self.best_score, "q": self.best_weights},
            "buffer": self.buffer.state_dict() if self.cfg.checkpoint_buffer else None,
            "rng": {
                "loop": self.rng.bit_generator.state,
                "env": self.env.unwrapped.np_random.bit_generator.state,
                "action_space": self.env.action_space.np_random.bit_generator.state,
                "torch": torch.get_rng_state(),
            },
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint of any version; refuses one made under other shapes."""
        saved = migrate_checkpoint(saved)
        check_shapes(self.cfg, saved, self.env)
        self.q.network.load_state_dict(saved["q"])
        self.q_target.network.load_state_dict(saved["q_target"])
        self.q.optimizer.load_state_dict(saved["optimizer"])
        if saved["buffer"] is not None:
            self.buffer.load_state_dict(saved["buffer"])
        self.rng.bit_generator.state = saved["rng"]["loop"]
        self.env.unwrapped.np_random.bit_generator.state = saved["rng"]["env"]
        self.env.action_space.np_random.bit_generator.state = saved["rng"]["action_space"]
        torch.set_rng_state(saved["rng"]["torch"])
        self.step, self.last_eval = int(saved["step"]), int(saved["last_eval"])
        self.best_score, self.best_weights = saved["best"]["score"], saved["best"]["q"]
        self.clock = Stopwatch(already=float(saved["train_seconds"]))
