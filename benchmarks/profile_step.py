"""Where the time of one env step goes, for the default config, the previous default
(no LayerNorm, clip at 10; docs/tuning.md says why it changed) and the exercise's layout (one
update per env step on a 256x256 network, as the first version of this loop did).

Each part of the loop is timed alone on realistic inputs (a full replay buffer, a real env)
and charged per env step: the update's parts divided by `train_freq`, greedy action selection
weighted by 1 - epsilon at the end of the schedule. The sum is compared with the whole loop's
measured rate, so what the parts miss is visible.

    python benchmarks/profile_step.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from dqn.buffer import ExperienceBuffer, NStepTransitions
from dqn.config import TrainConfig
from dqn.environment import make_env
from dqn.estimator import compute_target_values
from dqn.learn import learn
from dqn.state import build_estimator


def microseconds(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(repeat // 10):  # warm-up
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def parts(cfg: TrainConfig, repeat: int) -> dict[str, float]:
    """Microseconds per env step of each part of the loop under `cfg`."""
    env = make_env(cfg.env.id)
    observation, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    buffer = ExperienceBuffer(cfg.buffer.capacity, env.observation_space.shape, rng=rng)
    n_step = NStepTransitions(cfg.n_step, cfg.gamma)
    while len(buffer) < cfg.buffer.capacity:
        action = env.action_space.sample()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        for transition in n_step.add(observation, action, reward, next_observation, terminated, truncated):
            buffer.append(*transition)
        observation = next_observation if not (terminated or truncated) else env.reset()[0]
    q = build_estimator(cfg, env)
    q_target = q.copy()
    online = q if cfg.double_q else None
    obs, actions, rewards, next_obs, dones = buffer.sample(cfg.batch_size)
    targets = compute_target_values(q_target, rewards, next_obs, dones, cfg.gamma, online)

    def env_step() -> None:
        nonlocal observation
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            observation, _ = env.reset()

    def store() -> None:
        for transition in n_step.add(observation, 0, 0.0, observation, False, False):
            buffer.append(*transition)

    greedy = 1 - cfg.schedule.end
    per_update = 1 / cfg.train_freq * cfg.gradient_steps
    return {
        "env.step": microseconds(env_step, repeat),
        "greedy action (x share of greedy steps)": greedy * microseconds(lambda: q.greedy_action(observation), repeat),
        "n-step + buffer append": microseconds(store, repeat),
        "buffer sample (per update / train_freq)": per_update
        * microseconds(lambda: buffer.sample(cfg.batch_size), repeat),
        "targets (per update / train_freq)": per_update
        * microseconds(lambda: compute_target_values(q_target, rewards, next_obs, dones, cfg.gamma, online), repeat),
        "forward+backward+Adam (per update / train_freq)": per_update
        * microseconds(lambda: q.train(obs, actions, targets), repeat),
        "target sync (/ target_update_interval)": microseconds(lambda: q_target.sync_from(q, cfg.tau), repeat)
        / cfg.target_update_interval,
    }


def loop_microseconds(cfg: TrainConfig) -> float:
    """The real loop's cost per env step, averaged over the run (learning_starts included)."""
    cfg.eval_episodes, cfg.checkpoint_every = 0, 0
    start = time.perf_counter()
    learn(cfg)
    return (time.perf_counter() - start) / cfg.total_steps * 1e6


def exercise_layout() -> TrainConfig:
    """The exercise's shape: one update per env step, 1-step targets, a plain 256x256 network, no clip."""
    cfg = TrainConfig(train_freq=1, n_step=1, double_q=False)
    cfg.network.hidden_sizes, cfg.network.layer_norm = [256, 256], False
    return cfg


def previous_default() -> TrainConfig:
    """The default before LayerNorm (docs/tuning.md): no LayerNorm, gradients clipped at 10."""
    cfg = TrainConfig(max_grad_norm=10.0)
    cfg.network.layer_norm = False
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=20_000, help="env steps of the whole-loop measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    layouts = {
        "exercise layout (plain 256x256, no clip, an update per step)": exercise_layout(),
        "previous default (no LayerNorm, clip 10)": previous_default(),
        "default config": TrainConfig(),
    }
    rows = {}
    for name, cfg in layouts.items():
        cfg.total_steps, cfg.learning_starts = args.steps, 1000
        rows[name] = parts(cfg, args.repeat)
        rows[name]["sum of the parts"] = sum(rows[name].values())
        rows[name]["whole loop, measured"] = loop_microseconds(cfg)
    names = list(rows)
    print("| microseconds per env step | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for part in rows[names[0]]:
        print(f"| {part} | " + " | ".join(f"{rows[n][part]:,.0f}" for n in names) + " |")
    print(
        "| env steps/s (whole loop) | "
        + " | ".join(f"{1e6 / rows[n]['whole loop, measured']:,.0f}" for n in names)
        + " |"
    )


if __name__ == "__main__":
    main()
