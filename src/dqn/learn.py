"""Deep Q-learning with experience replay (Mnih et al. 2013), top to bottom.

On top of the paper's algorithm box: a target network, Double DQN, n-step targets, Huber loss and
gradient clipping (each switchable), learning starts and a train frequency, and time-limit
truncation treated as a cut, not an end (truncated transitions bootstrap). `learn` is the box;
what is not the algorithm (greedy evaluations and keeping the best weights, checkpoints, stop
requests, logging) happens in `Hooks`, called at two points of the loop: after each step's update,
and at each episode's end before the reset, so a checkpoint holds the RNG states that make a
resumed run replay exactly what an unbroken one would have done.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dqn.buffer import NStepTransitions
from dqn.config import MAX_EVAL_EPISODES, TrainConfig
from dqn.environment import make_env
from dqn.estimator import ActionValueEstimator, compute_target_values
from dqn.policy import Episode, evaluate_episodes, select_action, summarize_episodes
from dqn.schedules import make_schedule
from dqn.state import TrainingState
from dqn.stops import Stopped

LogFn = Callable[[dict[str, float], int], None]
SaveFn = Callable[[dict[str, Any]], None]
EVAL_SEED_OFFSET = 1_000_000  # evaluation starts never coincide with training starts
FINAL_EVAL_SEED_OFFSET = EVAL_SEED_OFFSET + MAX_EVAL_EPISODES  # nor the final evaluation's with the selecting ones


class NonFiniteLoss(FloatingPointError):
    """The TD loss became NaN or infinite: training has diverged."""


def learn(
    cfg: TrainConfig,
    log: LogFn = lambda metrics, step: None,
    save: SaveFn | None = None,
    resume: dict[str, Any] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> ActionValueEstimator:
    """Train a Q-network on `cfg.env` until `total_steps` env steps or `max_time` seconds.

    Returns the network as trained to the end, or with `keep_best` the weights of the best greedy
    evaluation (the last weights stay in the final checkpoint); those delivered weights then play
    `final_eval_episodes` fresh greedy episodes, logged as `final_eval_*` at the last step. `save`
    receives a checkpoint (`TrainingState.state_dict()`) every `checkpoint_every` steps, at the end,
    and when `stop_requested()` turns true (then `Stopped` is raised); `resume` is such a checkpoint.
    """
    torch.set_num_threads(cfg.torch_threads)  # a process-wide setting: made by the loop it is for, not its state
    s = TrainingState.start(cfg)
    if resume is not None:
        s.load_state_dict(resume)
    hooks = Hooks(cfg, s, log, save, stop_requested)
    q, q_target, buffer, env = s.q, s.q_target, s.buffer, s.env
    epsilon = make_schedule(cfg.schedule.kind.value, cfg.schedule.start, cfg.schedule.end, cfg.schedule.decay_steps)
    n_step = NStepTransitions(cfg.n_step, cfg.gamma)
    observation, episode = s.first_observation(resumed=resume is not None), EpisodeTally()

    while hooks.budget_left():
        s.step += 1
        eps = epsilon(s.step)
        action = select_action(env, q, observation, eps, s.rng)  # act epsilon-greedily
        next_observation, reward, terminated, truncated, _ = env.step(action)
        for transition in n_step.add(observation, action, reward, next_observation, terminated, truncated):
            buffer.append(*transition)  # store (n-step returns once n rewards are known)
        observation = next_observation
        episode.add(reward)

        if s.step > cfg.learning_starts and s.step % cfg.train_freq == 0 and buffer.is_filled(cfg.batch_size):
            if cfg.lr_anneal:  # settle the final policy instead of letting it oscillate to the last step
                q.set_learning_rate(cfg.lr * (1 - s.step / cfg.total_steps))
            for _ in range(cfg.gradient_steps):
                episode.losses.append(td_update(cfg, q, q_target, buffer, s.step))
        if s.step % cfg.target_update_interval == 0:
            q_target.sync_from(q, cfg.tau)

        hooks.after_update()
        if terminated or truncated:
            hooks.episode_end(episode, eps)
            observation, _ = env.reset()
            episode = EpisodeTally()
    return hooks.finish()


def td_update(cfg: TrainConfig, q: ActionValueEstimator, q_target: ActionValueEstimator, buffer, step: int) -> float:
    """One gradient step on a sampled batch toward r + gamma^n * Q_target(s', a*) * (1 - done); returns the loss.

    Double DQN: the online network picks a*, the target network rates it.
    """
    batch = buffer.sample(cfg.batch_size)
    online = q if cfg.double_q else None
    targets = compute_target_values(
        q_target, batch.rewards, batch.next_observations, batch.dones, cfg.gamma**cfg.n_step, online
    )
    loss = q.train(batch.observations, batch.actions, targets)
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"loss became {loss} at step {step}")
    return loss


class EpisodeTally:
    """The running episode's return, length and TD losses."""

    def __init__(self) -> None:
        self.episode_return, self.length, self.losses = 0.0, 0, []

    def add(self, reward: float) -> None:
        self.episode_return += float(reward)
        self.length += 1


class Hooks:
    """Everything around the algorithm, at named points of the loop: greedy evaluations (keeping the
    best weights), the per-episode metrics, checkpoints and stop requests, and the end of training."""

    def __init__(self, cfg: TrainConfig, s: TrainingState, log: LogFn, save: SaveFn | None, stop_requested) -> None:
        self.cfg, self.s, self.log, self.save, self.stop_requested = cfg, s, log, save, stop_requested
        self.eval_env = make_env(cfg.env.id, cfg.env.eval_max_episode_steps, **cfg.env.kwargs)
        self.next_checkpoint = s.step + cfg.checkpoint_every if cfg.checkpoint_every else math.inf

    def budget_left(self) -> bool:
        cfg = self.cfg
        return (cfg.total_steps is None or self.s.step < cfg.total_steps) and (
            cfg.max_time is None or self.s.clock.seconds() < cfg.max_time
        )

    def after_update(self) -> None:
        """Every `eval_every` steps, a greedy evaluation."""
        cfg = self.cfg
        if cfg.eval_episodes and cfg.eval_every and self.s.step % cfg.eval_every == 0:
            self.greedy_evaluation()

    def episode_end(self, episode: EpisodeTally, eps: float) -> None:
        """Before the reset: log the episode, checkpoint when due or asked to stop, then stop if asked."""
        s = self.s
        metrics = {
            "episode_return": episode.episode_return,
            "episode_length": float(episode.length),
            "epsilon": eps,
            "steps_per_second": s.step / s.clock.seconds(),
        }
        if episode.losses:
            metrics["loss"] = float(np.mean(episode.losses))
        self.log(metrics, s.step)
        stop = self.stop_requested()
        if self.save is not None and (stop or s.step >= self.next_checkpoint):
            self.save(s.state_dict())
            self.next_checkpoint = s.step + self.cfg.checkpoint_every if self.cfg.checkpoint_every else math.inf
        if stop:
            raise Stopped(f"stopped at step {s.step}")

    def greedy_evaluation(self) -> None:
        """Greedy episodes from fixed start seeds; the best weights so far are kept (ties go to the later)."""
        s, cfg = self.s, self.cfg
        since = time.perf_counter()
        episodes = evaluate_episodes(s.q, self.eval_env, cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
        s.clock.exclude(since)
        scores = [e.score for e in episodes]
        metrics = {
            "eval_return_mean": float(np.mean(scores)),
            "eval_return_std": float(np.std(scores)),
            "eval_length_mean": float(np.mean([e.length for e in episodes])),
            "eval_truncated_fraction": float(np.mean([e.truncated for e in episodes])),
            "train_seconds": s.clock.seconds(),
        }
        if metrics["eval_return_mean"] >= s.best_score:
            s.best_score, s.best_weights = metrics["eval_return_mean"], copy.deepcopy(s.q.network.state_dict())
        self.log(metrics | {"best_eval_return_mean": s.best_score}, s.step)
        s.last_eval = s.step

    def finish(self) -> ActionValueEstimator:
        """A last evaluation and checkpoint; then the delivered weights and their fresh final evaluation."""
        s, cfg = self.s, self.cfg
        if cfg.eval_episodes and s.last_eval != s.step:
            self.greedy_evaluation()
        if self.save is not None:
            self.save(s.state_dict())
        if cfg.keep_best and s.best_weights is not None:
            s.q.network.load_state_dict(s.best_weights)
        if cfg.final_eval_episodes:
            since = time.perf_counter()
            episodes = evaluate_episodes(s.q, self.eval_env, cfg.final_eval_episodes, cfg.seed + FINAL_EVAL_SEED_OFFSET)
            s.clock.exclude(since)
            self.log(final_eval_metrics(episodes), s.step)
        s.env.close()
        self.eval_env.close()
        return s.q


def final_eval_metrics(episodes: list[Episode]) -> dict[str, float]:
    """What the final evaluation logs: the statistics `dqn-evaluate` reports (sample std, NaN for one
    episode; success = return >= 200), under `final_eval_*`."""
    s = summarize_episodes(episodes)
    return {
        "final_eval_return_mean": s.return_mean,
        "final_eval_return_std": s.return_std,
        "final_eval_success_rate": s.success_rate,
        "final_eval_truncated_fraction": s.timed_out,
        "final_eval_length_mean": s.length_mean,
        "final_eval_episodes": float(s.episodes),
    }
