"""Typed configuration: the schema Hydra composes `conf/` into, and its validation.

The dataclasses are plain Python so the algorithm can take them without importing
Hydra; `register_configs` hands them to Hydra's ConfigStore so a misspelt key or a
wrong type fails at composition, and `validate` rejects values no type can catch
(a zero batch size, an epsilon above 1) before any run is started.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import gymnasium
import numpy as np

from dqn.buffer import BUFFERS
from dqn.schedules import SCHEDULES

MAX_EVAL_EPISODES = 1_000_000
"""The in-training evaluations' start seeds span this many values (see dqn.learn's seed offsets)."""


class Activation(Enum):
    relu = "relu"
    tanh = "tanh"
    elu = "elu"
    gelu = "gelu"


ScheduleKind = Enum("ScheduleKind", [(name, name) for name in SCHEDULES])
"""`schedule.kind`'s choices: one per schedule that dqn.schedules registers."""
BufferKind = Enum("BufferKind", [(name, name) for name in BUFFERS])
"""`buffer.kind`'s choices: one per replay buffer that dqn.buffer registers."""


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class Loss(Enum):
    huber = "huber"
    mse = "mse"


@dataclass
class EnvConfig:
    id: str = "LunarLander-v3"
    """Gymnasium environment id."""
    max_episode_steps: int | None = 1000
    """Training episodes are truncated here (the exercise used 500); null keeps the env's own limit."""
    eval_max_episode_steps: int | None = None
    """Evaluation episodes are truncated here; null keeps the env's own limit (1000)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for `gymnasium.make` (e.g. enable_wind)."""


@dataclass
class NetworkConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """Units of each hidden layer, input side first."""
    activation: Activation = Activation.relu
    """Non-linearity after each hidden layer."""
    dueling: bool = False
    """Split the head into a state value and action advantages (Dueling DQN)."""
    layer_norm: bool = True
    """Normalise each hidden layer's pre-activations (LayerNorm, with a learnt gain and shift), before the
    activation. It keeps the Q-network's features on one scale while its targets move, which is where a
    plain MLP's Q-learning stalls or swings (docs/tuning.md has the evidence)."""


@dataclass
class BufferConfig:
    kind: BufferKind = BufferKind.uniform
    """Which replay buffer (uniform: every stored transition equally likely)."""
    capacity: int = 50_000
    """Transitions kept; the oldest is overwritten when full."""


@dataclass
class ScheduleConfig:
    """Exploration rate epsilon as a function of the env step."""

    kind: ScheduleKind = ScheduleKind.linear
    """How epsilon moves from start to end (constant stays at start)."""
    start: float = 1.0
    """Epsilon at step 0."""
    end: float = 0.05
    """Epsilon the decay approaches."""
    decay_steps: int = 12_000
    """linear: steps from start to end; exponential: steps for (epsilon - end) to halve."""


@dataclass
class TrackingConfig:
    """Which MLflow store and experiment; training and evaluation both read these."""

    tracking_uri: str | None = None
    """null: $MLFLOW_TRACKING_URI if set, else SQLite in <cwd>/mlruns/mlflow.db."""
    experiment_name: str | None = None
    """null: $MLFLOW_EXPERIMENT_NAME if set, else `dqn-lunar-lander`."""


@dataclass
class MlflowConfig(TrackingConfig):
    enabled: bool = True
    """false trains without tracking (used to measure what tracking costs)."""
    log_model: bool = True
    """Log the final network as an MLflow model (loadable with mlflow.pytorch / mlflow.pyfunc)."""
    registered_model_name: str = "dqn-lunar-lander"
    """The model registry name `register=true` uses."""


INTERNAL = {"internal": True}
"""Field metadata of keys the program sets for itself (an Optuna search's trial): `--help` leaves them out."""


@dataclass
class TrialConfig:
    """Where a job of an Optuna search reports its evaluations; set by the search (`dqn.search`), null otherwise."""

    study: str | None = None
    """The study's name."""
    storage: str | None = None
    """The study's Optuna storage URL."""
    number: int | None = None
    """The trial this job is one seed of."""


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    trial: TrialConfig = field(default_factory=TrialConfig, metadata=INTERNAL)

    seed: int = 0
    """Seeds Python, numpy, torch, the env and its action space."""
    batch_size: int = 128
    """Transitions per gradient step."""
    lr: float = 1e-3
    """Adam's learning rate."""
    adam_eps: float = 1e-8
    """Adam's epsilon. Rainbow raises it to 1.5e-4 to damp the steps of weights whose gradients are
    rarely non-zero; on LunarLander at 100k steps that hurt (docs/tuning.md)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) per unit of lr; 0 is plain Adam. The exercise's estimator used
    torch's AdamW default, 0.01 (docs/local_optimum.md)."""
    lr_anneal: bool = False
    """Decay lr linearly to 0 at total_steps, so the final policy settles."""
    gamma: float = 0.99
    """Discount factor."""
    total_steps: int | None = 100_000
    """Env-step budget; null trains until max_time."""
    max_time: float | None = None
    """Training wall-clock budget in seconds (evaluation excluded); null: no limit."""
    learning_starts: int = 1_000
    """Env steps of pure experience collection before the first gradient step."""
    train_freq: int = 2
    """Env steps between gradient phases."""
    gradient_steps: int = 1
    """Gradient steps per phase."""
    target_update_interval: int = 250
    """Env steps between updates of the target network from the online one."""
    tau: float = 1.0
    """Target update coefficient: 1 copies the online weights, < 1 moves toward them (Polyak averaging)."""
    max_grad_norm: float | None = None
    """Gradient-norm clip; null disables clipping. With layer_norm, the clip (at 10, as SB3's) slowed
    learning (docs/tuning.md)."""
    loss: Loss = Loss.huber
    """TD loss: Huber is less sensitive than squared error to rare large TD errors."""
    n_step: int = 3
    """Steps of real reward before bootstrapping (n-step Q-learning targets); 1 is the classic DQN target."""
    double_q: bool = True
    """Double DQN: the online network picks the next action, the target network rates it."""
    eval_every: int = 5_000
    """Env steps between greedy evaluations; 0 evaluates only at the end."""
    eval_episodes: int = 10
    """Greedy episodes per evaluation, on a separate env; 0 disables evaluation. At most
    MAX_EVAL_EPISODES, so their start seeds never reach the final evaluation's."""
    final_eval_episodes: int = 50
    """Greedy episodes played after training by the weights the run delivers, on start seeds no
    evaluation during training used; logged as `final_eval_*`. The best of ~20 noisy evaluations
    (`best_eval_return_mean`) overrates what `keep_best` ships; fresh episodes do not. 0 disables it."""
    keep_best: bool = True
    """Deliver the weights of the best greedy evaluation, not the last ones (as RL-Zoo's best_model)."""
    device: Device = Device.cpu
    """Where the networks run; auto takes CUDA when torch sees a GPU."""
    torch_threads: int = 1
    """Intra-op threads; 1 lets parallel sweep jobs share the cores without fighting."""
    checkpoint_every: int = 25_000
    """Env steps between checkpoints (taken at the next episode end); 0: only at the end."""
    checkpoint_buffer: bool = True
    """Store the replay buffer in checkpoints; without it a resumed run refills it and diverges."""
    register: bool = False
    """Register the final model in MLflow's model registry as `mlflow.registered_model_name`."""
    resume: str | None = None
    """A KILLED or FAILED run's id: continue it from its last checkpoint, into the same MLflow run."""


OPTUNA_SWEEPER = "hydra_plugins.dqn_sweeper.optuna_sweeper.OptunaSweeper"
"""Hydra instantiates only plugins under `hydra_plugins`; that class hands the work to `dqn.search`."""


@dataclass
class SearchConfig:
    """`hydra/sweeper=optuna`: an Optuna search (conf/hydra/sweeper/optuna.yaml; checked by `dqn.search`)."""

    _target_: str = OPTUNA_SWEEPER
    params: dict[str, str] = field(default_factory=dict)
    """The search space in Hydra's sweep syntax: `lr: tag(log, interval(1e-4, 3e-3))`, `batch_size: choice(32, 64)`,
    `n_step: range(1, 5)`; a plain value is fixed. Sweep overrides on the command line join it."""
    n_trials: int = 20
    """Trials the study ends with, counting the ones earlier or concurrent commands ran: COMPLETE, PRUNED and
    FAIL (its jobs failed). A trial cut short by a stopped or killed command does not count: it is run again."""
    seeds_per_trial: int = 3
    """Seeds each trial trains, one job each (seeds seed, seed+1, ...); its value is their mean final score."""
    n_jobs: int = 2
    """Trials per batch: the launcher gets n_jobs * seeds_per_trial jobs at once and runs them on its workers."""
    study_name: str | None = None
    """null: `search-` and a hash of the search (space, seeds, the other overrides, sampler and pruner with
    their settings, not n_trials), so the same command continues the same study and a different search
    (another sampler seed included) gets its own."""
    storage: str | None = None
    """Optuna RDB storage URL; null: SQLite beside the embedded MLflow store, `mlruns/optuna.db`."""
    sampler: str = "tpe"
    """Optuna's sampler by name (dqn.search.study.SAMPLERS: tpe, random, grid; grid takes choice/range
    params only, and stops once each point has run)."""
    sampler_seed: int | None = None
    """Seeds the sampler; null: the config's `seed`. Each trial's draw is seeded from it and the trial's place
    in the study, so the same command draws the same trials (docs/search.md says when)."""
    n_startup_trials: int = 5
    """TPE: random trials before it models the results."""
    pruner: str = "median"
    """Optuna's pruner by name (dqn.search.trial.PRUNERS: median, successive_halving, none), judging a trial
    at each step all its seeds have evaluated, against the trials finished before its batch started (never
    its batch-mates)."""
    pruner_startup_trials: int = 3
    """median: COMPLETE trials (finished before the batch) needed before it prunes anything."""
    pruner_warmup_steps: int = 0
    """median: env steps before a trial can be pruned."""


RACE_SWEEPER = "hydra_plugins.dqn_sweeper.race_sweeper.RaceSweeper"
"""`hydra/sweeper=race`'s class; it hands the work to `dqn.racing`."""


@dataclass
class RaceConfig:
    """`hydra/sweeper=race`: a grid raced over seeds, F-Race style (conf/hydra/sweeper/race.yaml; `dqn.racing`).
    Every config runs first_seeds seeds; then each round drops the configs shown worse than the best and
    gives the others more seeds, until one is left, or max_seeds or the seed budget is reached."""

    _target_: str = RACE_SWEEPER
    params: dict[str, str] = field(default_factory=dict)
    """The grid in Hydra's sweep syntax: `batch_size: 64,128,256`, `lr: choice(1e-4, 1e-3)`, `n_step: range(1, 4)`;
    a plain value is fixed. Sweeps on the command line join it. No seed: the race gives seeds seed, seed+1, ...,
    the same to every config, so that seeds are blocks."""
    first_seeds: int = 3
    """Seeds every config runs before the first test."""
    seeds_per_round: int = 1
    """Seeds each config still in the race gets per round after the first; each round is one launch."""
    max_seeds: int = 10
    """Seeds a config runs at most; the race ends when its contenders have them."""
    seed_budget: int | None = None
    """Jobs the race runs at most, all rounds together (a round that would pass it is not started); null:
    every config may reach max_seeds."""
    alpha: float = 0.05
    """Level of each round's test: a config is dropped when its gap to the best has a p-value at most this."""


class ConfigError(ValueError):
    """A config value that no training should start with."""


def require(ok: bool, key: str, value: Any, allowed: str, prefix: str = "") -> None:
    """Unless `ok`, refuse `key=value` in one line that names what is allowed (every command's refusals)."""
    if not ok:
        shown = "null" if value is None else value.value if isinstance(value, Enum) else value
        raise ConfigError(f"{prefix}{key}={shown} is invalid: allowed {allowed}")


def first_line(error: BaseException) -> str:
    """A library's message as a refusal's tail: MLflow's and SQLAlchemy's span many lines (SQL, hints)."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


require_sweeper = functools.partial(require, prefix="hydra.sweeper.")
"""`require` for a sweeper's settings (a search's, a race's), named as the command line sets them."""


def unknown_keys(tree: Mapping[str, Any], schema: type = TrainConfig, prefix: str = "") -> list[str]:
    """Dotted keys in `tree` that `schema` does not declare. Hydra lets `+key=value` add any key even to a
    typed config, so a misspelt `+lrr=1e-3` would otherwise train with the default lr."""
    hints = typing.get_type_hints(schema)
    found = []
    for key, value in tree.items():
        if key not in hints:
            found.append(f"{prefix}{key}")
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            found += unknown_keys(value, hints[key], f"{prefix}{key}.")
    return found


SEED_LIMIT = 2**32  # numpy's legacy seeding, which `seed_everything` also sets, takes seeds below this
FLOATS = ("lr", "adam_eps", "weight_decay", "gamma", "tau", "max_time", "max_grad_norm")


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the first bad key, its value and what is allowed."""
    for key in FLOATS:
        value = getattr(cfg, key)
        require(value is None or math.isfinite(value), key, value, "a finite number")
    require(0 <= cfg.seed < SEED_LIMIT, "seed", cfg.seed, f"an integer in [0, {SEED_LIMIT - 1}]")
    require(cfg.batch_size > 0, "batch_size", cfg.batch_size, "an integer >= 1")
    require(cfg.lr > 0, "lr", cfg.lr, "a float > 0")
    require(cfg.adam_eps > 0, "adam_eps", cfg.adam_eps, "a float > 0")
    require(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "a float >= 0")
    require(0 <= cfg.gamma <= 1, "gamma", cfg.gamma, "a float in [0, 1]")
    require(0 < cfg.tau <= 1, "tau", cfg.tau, "a float in (0, 1]")
    require(cfg.total_steps is None or cfg.total_steps > 0, "total_steps", cfg.total_steps, "an integer >= 1 or null")
    require(cfg.max_time is None or cfg.max_time > 0, "max_time", cfg.max_time, "seconds > 0 or null")
    require(
        cfg.total_steps is not None or cfg.max_time is not None,
        "total_steps",
        cfg.total_steps,
        "an integer >= 1 when max_time is null (training needs a budget)",
    )
    for key in ("learning_starts", "eval_every", "eval_episodes", "final_eval_episodes", "checkpoint_every"):
        require(getattr(cfg, key) >= 0, key, getattr(cfg, key), "an integer >= 0")
    require(cfg.eval_episodes <= MAX_EVAL_EPISODES, "eval_episodes", cfg.eval_episodes, f"at most {MAX_EVAL_EPISODES}")
    for key in ("train_freq", "gradient_steps", "target_update_interval", "torch_threads", "n_step"):
        require(getattr(cfg, key) >= 1, key, getattr(cfg, key), "an integer >= 1")
    require(
        cfg.max_grad_norm is None or cfg.max_grad_norm > 0, "max_grad_norm", cfg.max_grad_norm, "a float > 0 or null"
    )
    require(
        cfg.buffer.capacity >= cfg.batch_size,
        "buffer.capacity",
        cfg.buffer.capacity,
        f"an integer >= batch_size ({cfg.batch_size})",
    )
    require(
        bool(cfg.network.hidden_sizes) and all(n > 0 for n in cfg.network.hidden_sizes),
        "network.hidden_sizes",
        cfg.network.hidden_sizes,
        "a non-empty list of integers >= 1",
    )
    require(not cfg.lr_anneal or cfg.total_steps is not None, "lr_anneal", True, "false when total_steps is null")
    require(cfg.resume is None or cfg.mlflow.enabled, "resume", cfg.resume, "null when mlflow.enabled=false")
    if cfg.register:
        _validate_model_name(cfg.mlflow.registered_model_name)
    _validate_experiment_name(cfg.mlflow.experiment_name)
    _validate_schedule(cfg.schedule)
    observation_size = _validate_env(cfg.env)
    _validate_memory(cfg.buffer.capacity, observation_size)
    _validate_device(cfg.device)


def _validate_model_name(name: str) -> None:
    from mlflow.exceptions import MlflowException  # here: the algorithm imports this module without MLflow
    from mlflow.utils.validation import _validate_model_name as mlflow_check

    try:
        mlflow_check(name)
    except MlflowException:
        require(False, "mlflow.registered_model_name", repr(name), "a non-empty name without '/' or ':'")


def _validate_experiment_name(name: str | None) -> None:
    from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH

    shown = f"{name[:40]}... ({len(name)} characters)" if name and len(name) > 40 else repr(name)
    ok = name is None or bool(name.strip()) and len(name) <= MAX_EXPERIMENT_NAME_LENGTH
    require(ok, "mlflow.experiment_name", shown, f"null or a name of 1 to {MAX_EXPERIMENT_NAME_LENGTH} characters")


def _validate_memory(capacity: int, observation_size: int) -> None:
    """The replay arrays are allocated whole at the start: refuse a buffer this machine cannot hold."""
    needed = capacity * (2 * 4 * observation_size + 8 + 4 + 4)  # two float32 observations, int64 action, reward, done
    available = _available_memory()
    require(
        available is None or needed <= available,
        "buffer.capacity",
        capacity,
        f"at most {available // (2 * 4 * observation_size + 16) if available else 0} here "
        f"(it needs {needed / 2**30:.1f} GiB, {(available or 0) / 2**30:.1f} GiB are available)",
    )


def _available_memory() -> int | None:
    """Bytes the kernel says a new allocation can use (MemAvailable), None where it does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _validate_schedule(s: ScheduleConfig) -> None:
    for key in ("start", "end"):
        value = getattr(s, key)
        require(0 <= value <= 1, f"schedule.{key}", value, "an epsilon in [0, 1]")
    if s.kind is not ScheduleKind.constant:
        require(s.end <= s.start, "schedule.end", s.end, f"an epsilon <= schedule.start ({s.start}) for a decay")
        require(s.decay_steps >= 1, "schedule.decay_steps", s.decay_steps, "an integer >= 1")


def _validate_env(env: EnvConfig) -> int:
    """Check the env can be made as configured; return the length of its observation vector."""
    for key in ("max_episode_steps", "eval_max_episode_steps"):
        value = getattr(env, key)
        require(value is None or value >= 1, f"env.{key}", value, "an integer >= 1 or null")
    return check_env(env.id, env.kwargs)


def check_env(env_id: str, kwargs: Mapping[str, Any], key: str = "env.id") -> int:
    """Refuse an env DQN can neither train nor evaluate (unknown, continuous actions, an image observation),
    naming `key`; return the length of its observation vector."""
    examples = "LunarLander-v3, CartPole-v1, Acrobot-v1, MountainCar-v0"
    require(
        env_id in gymnasium.registry,
        key,
        env_id,
        f"a registered gymnasium id with discrete actions, such as {examples}",
    )
    try:
        probe = gymnasium.make(env_id, **kwargs)
    except Exception as error:  # gymnasium passes kwargs to the env's constructor: any error can come back
        shown = f"{dict(kwargs)} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        require(False, "env.kwargs", shown, f"keyword arguments that {env_id} accepts")
    actions, observations = probe.action_space, probe.observation_space
    probe.close()
    discrete = isinstance(actions, gymnasium.spaces.Discrete)
    require(discrete, key, env_id, f"an env with discrete actions (DQN picks an argmax), such as {examples}")
    vector = isinstance(observations, gymnasium.spaces.Box) and len(observations.shape) == 1
    require(vector, key, env_id, f"an env whose observation is a vector (a 1-D Box), such as {examples}")
    return int(np.prod(observations.shape))


def _validate_device(device: Device) -> None:
    import torch

    if device is Device.cuda and not torch.cuda.is_available():
        require(False, "device", "cuda", "cpu or auto here: no CUDA GPU is visible to torch")


def register_resolvers() -> None:
    """`${dqn.uid:}`, a short random token for output folder names: two runs started in the same second
    must not share a folder. Cached on the config, so a sweep's jobs (and a requeued job) see the
    launcher's value."""
    import secrets

    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("dqn.uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)


def register_configs() -> None:
    """Store the schema as `train_schema`; `conf/train.yaml` lists it first in its defaults,
    so every group option is merged into (and checked against) a typed node. The Optuna sweeper's
    schema is `hydra/sweeper/optuna_schema`, the base of conf/hydra/sweeper/optuna.yaml; the race's
    `hydra/sweeper/race_schema`, of race.yaml."""
    from hydra.core.config_store import ConfigStore  # here, so the algorithm can import this module without Hydra

    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(group="hydra/sweeper", name="optuna_schema", node=SearchConfig)
    store.store(group="hydra/sweeper", name="race_schema", node=RaceConfig)
