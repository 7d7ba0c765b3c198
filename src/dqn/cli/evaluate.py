"""`python -m dqn.cli.evaluate`: score trained weights over many greedy episodes, optionally film one, and record
the result on the run that trained them.

    python -m dqn.cli.evaluate run_id=<run id> video=true   # also logs evaluate_* metrics and videos/ to the run
    python -m dqn.cli.evaluate weights=<run folder>/lunar-dqn.pth episodes=100

Its metrics are `evaluate_*`, not `final_eval_*`: those are the fresh evaluation training itself ends
with (dqn.learn), on other start seeds and episode counts; one name, one meaning.
"""

from __future__ import annotations

import logging
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium
import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from dqn.cli.help import describe
from dqn.config import SEED_LIMIT, ConfigError, TrackingConfig, check_env, register_resolvers, require
from dqn.environment import SOLVED, make_env
from dqn.estimator import ActionValueEstimator
from dqn.policy import Episode, Summary, evaluate_episodes, outcome, summarize_episodes
from dqn.tracking.store import TrackingUnavailable, existing_store, tracking_uri
from dqn.video import record_episode

record = logging.getLogger("dqn.record")
WEIGHTS = "lunar-dqn.pth"
VIDEO = "lunar-dqn-seed{seed}.mp4"


@dataclass
class EvaluateConfig:
    run_id: str | None = None
    """An MLflow run whose `lunar-dqn.pth` artifact to evaluate; the results are logged to it."""
    weights: str | None = None
    """A weights file saved by ActionValueEstimator.save_weights (a run folder's lunar-dqn.pth); nothing is tracked."""
    checkpoint: str | None = None
    """The old name of `weights`, still accepted (a training checkpoint is another file: checkpoint.pt)."""
    episodes: int = 100
    """Greedy episodes, with start seeds seed, seed+1, ..."""
    seed: int = 0
    """Start seed of the first episode."""
    video: bool = False
    """Also film the first `video_episodes` episodes to <output dir>/lunar-dqn-seed<start seed>.mp4."""
    video_episodes: int = 1
    """How many of the episodes to film when video=true (start seeds seed, seed+1, ...)."""
    max_episode_steps: int | None = None
    """Time limit; null keeps the env's own (1000 for LunarLander)."""
    env_id: str = "LunarLander-v3"
    """Gymnasium environment id (discrete actions)."""
    min_return_mean: float | None = None
    """Exit 1 when the mean return is below this (the shipped model had to reach 250)."""
    mlflow: TrackingConfig = field(default_factory=TrackingConfig)


class EvaluationError(ConfigError):
    """Input that nothing can be evaluated with."""


def load_estimator(weights: Path, env: gymnasium.Env) -> ActionValueEstimator:
    """An estimator for `env` with the weights (and architecture) in `weights`."""
    estimator = ActionValueEstimator(env)
    try:
        estimator.load_weights(weights)
    except FileNotFoundError:
        raise EvaluationError(f"weights={weights}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, EOFError) as error:
        raise EvaluationError(
            f"weights={weights} is not a weights file saved by ActionValueEstimator.save_weights "
            f"({type(error).__name__})"
        ) from None
    return estimator


def evaluate_weights(
    weights: Path, env_id: str, episodes: int, seed: int, max_episode_steps: int | None = None
) -> tuple[ActionValueEstimator, list[Episode]]:
    """The estimator in `weights` and its greedy episodes (start seeds seed, seed+1, ...) on a fresh env."""
    env = make_env(env_id, max_episode_steps)
    try:
        estimator = load_estimator(weights, env)
        return estimator, evaluate_episodes(estimator, env, episodes, seed)
    finally:
        env.close()


def report(summary: Summary, source: str, limit: int | None) -> str:
    """The lines `python -m dqn.cli.evaluate` prints."""
    s = summary
    return "\n".join(
        [
            f"{s.episodes} greedy episodes of {source} (time limit {limit} steps)",
            f"return: mean {s.return_mean:.2f}  std {s.return_std:.2f}  min {s.return_min:.2f}  max {s.return_max:.2f}",
            f"success (return >= {SOLVED:g}): {s.success_rate:.3f}",
            f"ended: landed {s.landed:.3f}  crashed {s.crashed:.3f}  timed_out {s.timed_out:.3f}",
        ]
    )


def run_client(settings: EvaluateConfig) -> MlflowClient:
    """A client of the store that holds `run_id`; refuses a missing store or run instead of creating one."""
    uri = tracking_uri(settings.mlflow.tracking_uri, Path.cwd())
    client = existing_store(uri)  # a server that is down, a missing SQLite file: said in one line
    try:
        client.get_run(settings.run_id)
    except MlflowException:
        raise EvaluationError(f"run_id={settings.run_id}: no such run in the tracking store {uri}") from None
    return client


def fetch_weights(client: MlflowClient, run_id: str, out_dir: Path) -> Path:
    """Download the run's `lunar-dqn.pth` into `out_dir`."""
    try:
        return Path(client.download_artifacts(run_id, WEIGHTS, str(out_dir)))
    except (MlflowException, OSError):
        raise EvaluationError(f"run_id={run_id}: the run has no {WEIGHTS} artifact (did it finish?)") from None


def record_on_run(
    client: MlflowClient, run_id: str, summary: Summary, settings: EvaluateConfig, videos: list[Path]
) -> None:
    """The figures as `evaluate_*` metrics (step 0), the settings behind them as tags and the video under
    `videos/`; the run's status and end time stay as they were."""
    timestamp = int(time.time() * 1000)
    metrics = [Metric(key, value, timestamp, 0) for key, value in summary.metrics("evaluate_").items()]
    tags = [RunTag("evaluate_seed", str(settings.seed)), RunTag("evaluate_time_limit", str(time_limit(settings)))]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    for video in videos:
        client.log_artifact(run_id, str(video), "videos")


def time_limit(settings: EvaluateConfig) -> int | None:
    """The episode cap in force: the configured one, else the env's registered one."""
    return settings.max_episode_steps or gymnasium.spec(settings.env_id).max_episode_steps


def film(estimator: ActionValueEstimator, settings: EvaluateConfig, out_dir: Path) -> list[Path]:
    """Record the first `video_episodes` episodes, one MP4 each, and say where and how each went."""
    paths = []
    for seed in range(settings.seed, settings.seed + settings.video_episodes):
        path = out_dir / VIDEO.format(seed=seed)
        episode, frames = record_episode(estimator, settings.env_id, seed, path, settings.max_episode_steps)
        say(f"video: {path} (seed {seed}: {outcome(episode)}, return {episode.score:.2f}, {frames} frames)")
        paths.append(path)
    return paths


def say(text: str) -> None:
    """Print `text` as it is, and keep it in the run folder's evaluate.log too (conf/evaluate.yaml gives the
    `dqn.record` logger Hydra's file handler alone, so the console shows it once)."""
    print(text, flush=True)
    record.info(text)


def check(settings: EvaluateConfig) -> None:
    """Refuse settings no evaluation should start with, naming the key."""
    if settings.weights is not None and settings.checkpoint is not None:
        raise EvaluationError("weights= and checkpoint= are one key (checkpoint is its old name): allowed one of them")
    weights = weights_file(settings)
    if (settings.run_id is None) == (weights is None):
        got = "neither" if settings.run_id is None else "both"
        raise EvaluationError(f"give exactly one of run_id=<MLflow run id> or weights=<weights file> (got {got})")
    require(settings.episodes >= 1, "episodes", settings.episodes, "an integer >= 1")
    in_episodes = f"an integer in [1, {settings.episodes}]"
    require(1 <= settings.video_episodes <= settings.episodes, "video_episodes", settings.video_episodes, in_episodes)
    steps = settings.max_episode_steps
    require(steps is None or steps >= 1, "max_episode_steps", steps, "an integer >= 1 or null")
    require(0 <= settings.seed < SEED_LIMIT, "seed", settings.seed, f"an integer in [0, {SEED_LIMIT - 1}]")
    check_env(settings.env_id, {}, key="env_id")
    if weights is not None and not Path(weights).is_file():
        raise EvaluationError(f"weights={weights}: no such file")


def weights_file(settings: EvaluateConfig) -> str | None:
    """The weights file to evaluate, under its name or its old one."""
    return settings.weights if settings.weights is not None else settings.checkpoint


def evaluate_command(settings: EvaluateConfig, out_dir: Path) -> Summary:
    """Everything `python -m dqn.cli.evaluate` does, without Hydra: evaluate, print, film, record on the run."""
    check(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = run_client(settings) if settings.run_id else None
    weights = fetch_weights(client, settings.run_id, out_dir) if client else Path(weights_file(settings))
    estimator, episodes = evaluate_weights(
        weights, settings.env_id, settings.episodes, settings.seed, settings.max_episode_steps
    )
    summary = summarize_episodes(episodes)
    source = f"run {settings.run_id}" if client else str(weights)
    say(report(summary, f"{settings.env_id} from {source}, start seeds {settings.seed}+", time_limit(settings)))
    videos = film(estimator, settings, out_dir) if settings.video else []
    if client:
        record_on_run(client, settings.run_id, summary, settings, videos)
        say(f"logged evaluate_* metrics{' and videos/' if videos else ''} to run {settings.run_id}")
    say(f"outputs in {out_dir}")
    return summary


def register_evaluate_schema() -> None:
    """Store the schema as `evaluate_schema`, the first entry of conf/evaluate.yaml's defaults."""
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


register_evaluate_schema()
register_resolvers()
HELP = """python -m dqn.cli.evaluate: score trained weights over many greedy episodes, optionally film them.

  python -m dqn.cli.evaluate run_id=<run id> video=true video_episodes=3   # logs evaluate_* and videos/ to the run
  python -m dqn.cli.evaluate weights=<run folder>/lunar-dqn.pth          # the weights a training run saved

Keys (key = default, then what it means):
{keys}
"""
OmegaConf.register_new_resolver(
    "dqn.evaluate_help", lambda: HELP.format(keys="\n".join(describe(EvaluateConfig)).replace("$", "$$")), replace=True
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(1)  # one observation per forward pass: more threads only add overhead
    settings: EvaluateConfig = OmegaConf.to_object(cfg)
    try:
        summary = evaluate_command(settings, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, TrackingUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if settings.min_return_mean is not None and summary.return_mean < settings.min_return_mean:
        print(
            f"error: mean return {summary.return_mean:.1f} < min_return_mean={settings.min_return_mean}",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
