"""Experience replay: a fixed-size ring of transitions, sampled uniformly, and n-step returns."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """A sampled batch, one row per transition; it unpacks like the exercise's 5-tuple."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    dones: np.ndarray
    """Terminations only: a truncated transition bootstraps."""


class ExperienceBuffer:
    """Transitions in preallocated float32 arrays; when full, the oldest is overwritten.

    `sample` returns `(observations, actions, rewards, next_observations, dones)` with
    shapes (B, *observation_shape), (B, *action_shape), (B, 1), (B, *observation_shape),
    (B, 1). `done` must mean *terminated*: a time-limit truncation still bootstraps.
    """

    def __init__(
        self,
        capacity: int,
        observation_shape: tuple[int, ...],
        action_shape: tuple[int, ...] = (1,),
        rng: np.random.Generator | None = None,
    ) -> None:
        self.capacity = int(capacity)
        self.observations = np.zeros((self.capacity, *observation_shape), dtype=np.float32)
        self.next_observations = np.zeros((self.capacity, *observation_shape), dtype=np.float32)
        # Discrete actions are indices: int64 is what torch's gather wants, so no copy per batch.
        self.actions = np.zeros((self.capacity, *action_shape), dtype=np.int64)
        self.rewards = np.zeros((self.capacity, 1), dtype=np.float32)
        self.dones = np.zeros((self.capacity, 1), dtype=np.float32)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.position = 0  # next slot to write
        self.size = 0

    def append(self, observation, action, reward, next_observation, done) -> None:
        i = self.position
        self.observations[i] = observation
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_observations[i] = next_observation
        self.dones[i] = done
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """A uniform batch, drawn with replacement (cheap, and unbiased for large buffers)."""
        idx = self.rng.integers(0, self.size, size=batch_size)
        return Batch(
            self.observations[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_observations[idx],
            self.dones[idx],
        )

    def is_filled(self, batch_size: int) -> bool:
        """True once there are at least `batch_size` transitions to sample from."""
        return self.size >= batch_size

    def __len__(self) -> int:
        return self.size

    def state_dict(self) -> dict:
        """The filled part as tensors (loadable with torch's weights-only mode), and the position."""
        state: dict = {key: torch.from_numpy(getattr(self, key)[: self.size].copy()) for key in _ARRAYS}
        return state | {"position": self.position, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for key in _ARRAYS:
            getattr(self, key)[:n] = np.asarray(state[key])
        self.position, self.size = int(state["position"]), n


_ARRAYS = ("observations", "actions", "rewards", "next_observations", "dones")


BUFFERS: dict[str, type[ExperienceBuffer]] = {"uniform": ExperienceBuffer}
"""Every replay buffer by the name `buffer.kind` takes (dqn.config builds its choices from these keys): a new
one (prioritized replay) is a class with `ExperienceBuffer`'s methods, its entry, and a conf/buffer/<name>.yaml."""


class NStepTransitions:
    """Turns 1-step transitions into n-step ones: (s_t, a_t, r_t + g r_t+1 + ... + g^(n-1) r_t+n-1, s_t+n, done).

    Multi-step targets propagate a landing's reward n times faster; n=1 is plain DQN.
    Near a termination the shorter returns are kept (done, nothing to bootstrap); at a
    time-limit truncation the last n-1 partial ones are dropped, since they would need a
    discount other than gamma^n, so every stored transition bootstraps with gamma^n.
    """

    def __init__(self, n: int, gamma: float) -> None:
        self.n, self.gamma = n, gamma
        self.pending: deque = deque()

    def add(self, observation, action, reward, next_observation, terminated, truncated) -> list[tuple]:
        """Take one env step; return the transitions (for `ExperienceBuffer.append`) it completes."""
        self.pending.append((observation, action, float(reward)))
        ready = []
        if terminated:
            while self.pending:
                ready.append(self._pop(next_observation, True))
        elif len(self.pending) == self.n:
            ready.append(self._pop(next_observation, False))
        if truncated:
            self.pending.clear()
        return ready

    def _pop(self, next_observation, done: bool) -> tuple:
        n_step_return = sum(self.gamma**k * r for k, (_, _, r) in enumerate(self.pending))
        observation, action, _ = self.pending.popleft()
        return observation, action, n_step_return, next_observation, done
