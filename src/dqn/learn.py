"""Deep Q-learning with experience replay (Mnih et al. 2013), top to bottom.

On top of the paper's algorithm box: a target network, Double DQN, Huber loss and
gradient clipping (each switchable), learning starts and a train frequency, and
time-limit truncation treated as a cut, not an end (truncated transitions bootstrap).
Everything that is not the algorithm arrives through `log(metrics, step)` and `save(state)`.

Checkpoints are taken at episode ends, before the next reset: with the RNG states
they hold, a resumed run replays exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dqn.agent import SOLVED, Episode, compute_target_values, evaluate_episodes, select_action
from dqn.buffer import ExperienceBuffer, NStepTransitions
from dqn.config import MAX_EVAL_EPISODES, Device, TrainConfig
from dqn.environment import make_env
from dqn.estimator import ActionValueEstimator
from dqn.schedules import make_schedule

LogFn = Callable[[dict[str, float], int], None]
SaveFn = Callable[[dict[str, Any]], None]
EVAL_SEED_OFFSET = 1_000_000  # evaluation starts never coincide with training starts
FINAL_EVAL_SEED_OFFSET = EVAL_SEED_OFFSET + MAX_EVAL_EPISODES  # nor the final evaluation's with the selecting ones


class NonFiniteLoss(FloatingPointError):
    """The TD loss became NaN or infinite: training has diverged."""


class Stopped(KeyboardInterrupt):
    """Training stopped on request (a signal) at an episode end, after a checkpoint."""


class CheckpointMismatch(ValueError):
    """A checkpoint made with a config whose shapes differ from this one's."""


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


class Stopwatch:
    """Training seconds: wall time minus the time spent in evaluation."""

    def __init__(self, already: float = 0.0) -> None:
        self.start, self.paused_seconds = time.perf_counter() - already, 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused_seconds

    def exclude(self, since: float) -> None:
        self.paused_seconds += time.perf_counter() - since


def learn(
    cfg: TrainConfig,
    log: LogFn = lambda metrics, step: None,
    save: SaveFn | None = None,
    resume: dict[str, Any] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> ActionValueEstimator:
    """Train a Q-network on `cfg.env` until `total_steps` env steps or `max_time` seconds.

    Returns the network as trained to the end, or with `keep_best` the weights of the best
    greedy evaluation (the last weights stay in the final checkpoint). Those delivered weights
    then play `final_eval_episodes` fresh greedy episodes, logged as `final_eval_*` at the last step.
    `save` receives a checkpoint every `checkpoint_every` steps, at the end, and when
    `stop_requested()` turns true (then `Stopped` is raised); `resume` is such a checkpoint.
    """
    rng = seed_everything(cfg.seed)
    torch.set_num_threads(cfg.torch_threads)
    env = make_env(cfg.env.id, cfg.env.max_episode_steps, **cfg.env.kwargs)
    eval_env = make_env(cfg.env.id, cfg.env.eval_max_episode_steps, **cfg.env.kwargs)
    env.action_space.seed(cfg.seed)

    q = build_estimator(cfg, env)
    q_target = q.copy()
    buffer = ExperienceBuffer(cfg.buffer.capacity, env.observation_space.shape, (1,), rng=rng)
    n_step = NStepTransitions(cfg.n_step, cfg.gamma)
    discount = cfg.gamma**cfg.n_step  # every stored transition bootstraps n steps ahead
    online = q if cfg.double_q else None  # Double DQN: the online network picks the next action
    epsilon = make_schedule(cfg.schedule.kind.value, cfg.schedule.start, cfg.schedule.end, cfg.schedule.decay_steps)

    def evaluation(step: int) -> None:
        since = time.perf_counter()
        episodes = evaluate_episodes(q, eval_env, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
        clock.exclude(since)
        scores = [e.score for e in episodes]
        metrics = {
            "eval_return_mean": float(np.mean(scores)),
            "eval_return_std": float(np.std(scores)),
            "eval_length_mean": float(np.mean([e.length for e in episodes])),
            "eval_truncated_fraction": float(np.mean([e.truncated for e in episodes])),
            "train_seconds": clock.seconds(),
        }
        if metrics["eval_return_mean"] >= best["score"]:  # ties go to the later, more trained weights
            best.update(score=metrics["eval_return_mean"], q=copy.deepcopy(q.network.state_dict()))
        log(metrics | {"best_eval_return_mean": best["score"]}, step)

    def final_evaluation(step: int) -> None:
        since = time.perf_counter()
        episodes = evaluate_episodes(q, eval_env, cfg.final_eval_episodes, cfg.seed + FINAL_EVAL_SEED_OFFSET)
        clock.exclude(since)
        log(final_eval_metrics(episodes), step)

    def snapshot() -> dict[str, Any]:
        return {
            "shapes": shapes(cfg, env),
            "step": step,
            "last_eval": last_eval,
            "train_seconds": clock.seconds(),
            "q": q.network.state_dict(),
            "q_target": q_target.network.state_dict(),
            "optimizer": q.optimizer.state_dict(),
            "best": best,
            "buffer": buffer.state_dict() if cfg.checkpoint_buffer else None,
            "rng": {
                "loop": rng.bit_generator.state,
                "env": env.unwrapped.np_random.bit_generator.state,
                "action_space": env.action_space.np_random.bit_generator.state,
                "torch": torch.get_rng_state(),
            },
        }

    def budget_left(step: int) -> bool:
        return (cfg.total_steps is None or step < cfg.total_steps) and (
            cfg.max_time is None or clock.seconds() < cfg.max_time
        )

    best: dict[str, Any] = {"score": -math.inf, "q": None}  # the best evaluation's weights
    if resume is None:
        step, last_eval, clock = 0, -1, Stopwatch()
        observation, _ = env.reset(seed=cfg.seed)
    else:
        step, last_eval, clock = restore(resume, cfg, env, q, q_target, buffer, rng)
        best = resume.get("best", best)  # checkpoints from before keep_best have none
        observation, _ = env.reset()  # the restored env RNG gives the start an unbroken run would get
    next_checkpoint = step + cfg.checkpoint_every if cfg.checkpoint_every else math.inf
    episode_return, episode_length, losses = 0.0, 0, []

    while budget_left(step):
        step += 1
        eps = epsilon(step)
        action = select_action(env, q, observation, eps, rng)
        next_observation, reward, terminated, truncated, _ = env.step(action)
        for transition in n_step.add(observation, action, reward, next_observation, terminated, truncated):
            buffer.append(*transition)
        observation = next_observation
        episode_return += float(reward)
        episode_length += 1

        if step > cfg.learning_starts and step % cfg.train_freq == 0 and buffer.is_filled(cfg.batch_size):
            if cfg.lr_anneal:  # settle the final policy instead of letting it oscillate to the last step
                q.set_learning_rate(cfg.lr * (1 - step / cfg.total_steps))
            for _ in range(cfg.gradient_steps):
                obs, actions, rewards, next_obs, dones = buffer.sample(cfg.batch_size)
                targets = compute_target_values(q_target, rewards, next_obs, dones, discount, online)
                loss = q.train(obs, actions, targets)
                if not math.isfinite(loss):
                    raise NonFiniteLoss(f"loss became {loss} at step {step}")
                losses.append(loss)
        if step % cfg.target_update_interval == 0:
            q_target.sync_from(q, cfg.tau)

        if cfg.eval_episodes and cfg.eval_every and step % cfg.eval_every == 0:
            evaluation(step)
            last_eval = step

        if terminated or truncated:
            metrics = {
                "episode_return": episode_return,
                "episode_length": float(episode_length),
                "epsilon": eps,
                "steps_per_second": step / clock.seconds(),
            }
            if losses:
                metrics["loss"] = float(np.mean(losses))
            log(metrics, step)
            stop = stop_requested()
            if save is not None and (stop or step >= next_checkpoint):
                save(snapshot())
                next_checkpoint = step + cfg.checkpoint_every if cfg.checkpoint_every else math.inf
            if stop:
                raise Stopped(f"stopped at step {step}")
            observation, _ = env.reset()
            episode_return, episode_length, losses = 0.0, 0, []

    if cfg.eval_episodes and last_eval != step:
        evaluation(step)
        last_eval = step
    if save is not None:
        save(snapshot())
    if cfg.keep_best and best["q"] is not None:
        q.network.load_state_dict(best["q"])
    if cfg.final_eval_episodes:
        final_evaluation(step)
    env.close()
    eval_env.close()
    return q


def final_eval_metrics(episodes: list[Episode]) -> dict[str, float]:
    """What the final evaluation logs. Its std is the sample std (NaN for one episode) and its
    success rate the share of episodes with a return >= 200, as everywhere in the package."""
    scores = np.array([e.score for e in episodes])
    return {
        "final_eval_return_mean": float(scores.mean()),
        "final_eval_return_std": float(scores.std(ddof=1)) if scores.size > 1 else math.nan,
        "final_eval_success_rate": float(np.mean(scores >= SOLVED)),
        "final_eval_truncated_fraction": float(np.mean([e.truncated for e in episodes])),
        "final_eval_length_mean": float(np.mean([e.length for e in episodes])),
        "final_eval_episodes": float(len(episodes)),
    }


def build_estimator(cfg: TrainConfig, env) -> ActionValueEstimator:
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
        loss=cfg.loss.value,
        max_grad_norm=cfg.max_grad_norm,
        device=resolve_device(cfg.device),
    )


def shapes(cfg: TrainConfig, env) -> dict[str, Any]:
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


def check_shapes(cfg: TrainConfig, state: dict[str, Any], env) -> None:
    """Refuse, naming the key, a checkpoint this config cannot continue."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointMismatch(f"the checkpoint lacks {', '.join(missing)}: it is not a training checkpoint")
    expected = shapes(cfg, env)
    made_with = {"network.layer_norm": False} | state["shapes"]  # checkpoints from before the option
    for key, value in made_with.items():
        if expected.get(key) != value:
            raise CheckpointMismatch(f"checkpoint made with {key}={value!r}; this config has {expected.get(key)!r}")


def check_checkpoint(cfg: TrainConfig, state: dict[str, Any]) -> None:
    """`check_shapes` before anything is built: a resume is refused before its run is touched."""
    env = make_env(cfg.env.id, cfg.env.max_episode_steps, **cfg.env.kwargs)
    try:
        check_shapes(cfg, state, env)
    finally:
        env.close()


def restore(state, cfg, env, q, q_target, buffer, rng) -> tuple[int, int, Stopwatch]:
    """Put a checkpoint back into freshly built parts; return (step, last_eval, clock)."""
    check_shapes(cfg, state, env)
    q.network.load_state_dict(state["q"])
    q_target.network.load_state_dict(state["q_target"])
    q.optimizer.load_state_dict(state["optimizer"])
    if state["buffer"] is not None:
        buffer.load_state_dict(state["buffer"])
    rng.bit_generator.state = state["rng"]["loop"]
    env.unwrapped.np_random.bit_generator.state = state["rng"]["env"]
    env.action_space.np_random.bit_generator.state = state["rng"]["action_space"]
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["step"]), int(state["last_eval"]), Stopwatch(already=float(state["train_seconds"]))
