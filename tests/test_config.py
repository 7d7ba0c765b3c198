import dataclasses
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import dqn
from dqn.buffer import BUFFERS
from dqn.config import Activation, BufferKind, ConfigError, Device, Loss, ScheduleKind, TrainConfig, validate
from dqn.learn import learn
from dqn.schedules import SCHEDULES
from dqn.state import build_estimator
from tests.conftest import compose_config

CONF = Path(dqn.__file__).parent / "conf"


def settings(tmp_path, *overrides: str) -> TrainConfig:
    return OmegaConf.to_object(compose_config(list(overrides), tmp_path / "out"))


def test_yaml_defaults_equal_the_schema_defaults(tmp_path):
    """conf/ and dqn.config state the defaults twice (for readers of each); they must agree."""
    assert settings(tmp_path) == TrainConfig()


def test_sweepable_hyperparameters_are_top_level(tmp_path):
    cfg = settings(tmp_path, "batch_size=256", "lr=5e-4", "seed=3", "double_q=false", "max_time=300")
    assert (cfg.batch_size, cfg.lr, cfg.seed, cfg.double_q, cfg.max_time) == (256, 5e-4, 3, False, 300)


def test_group_options_compose(tmp_path):
    cfg = settings(tmp_path, "schedule=constant", "network=mlp_small")
    assert cfg.schedule.kind is ScheduleKind.constant and cfg.schedule.start == cfg.schedule.end == 0.3
    assert cfg.network.hidden_sizes == [64, 64]
    assert settings(tmp_path, "schedule=exponential").schedule.kind is ScheduleKind.exponential


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("batch_sise=3", "batch_sise"),  # misspelt key
        ("batch_size=abc", "batch_size"),  # wrong type
        ("device=tpu", "device"),  # not an allowed value
        ("network.activation=swish", "activation"),
        ("network=nope", "network"),  # unknown group option
    ],
)
def test_wrong_keys_and_types_fail_at_composition(tmp_path, override, fragment):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([override], tmp_path / "out")
    assert fragment in str(error.value) + str(error.value.__cause__)


def bad(**changes) -> TrainConfig:
    cfg = TrainConfig()
    for key, value in changes.items():
        node, _, field = key.rpartition("__")
        target = getattr(cfg, node) if node else cfg
        setattr(target, field, value)
    return cfg


@pytest.mark.parametrize(
    "cfg, key",
    [
        (bad(batch_size=0), "batch_size"),
        (bad(batch_size=-3), "batch_size"),
        (bad(lr=0.0), "lr"),
        (bad(lr=-1e-3), "lr"),
        (bad(gamma=1.5), "gamma"),
        (bad(total_steps=0), "total_steps"),
        (bad(total_steps=None, max_time=None), "total_steps"),
        (bad(train_freq=0), "train_freq"),
        (bad(buffer__capacity=64, batch_size=128), "buffer.capacity"),
        (bad(schedule__start=1.5), "schedule.start"),
        (bad(schedule__end=-0.1), "schedule.end"),
        (bad(schedule__start=0.1, schedule__end=0.5), "schedule.end"),
        (bad(network__hidden_sizes=[]), "network.hidden_sizes"),
        (bad(env__id="LunarLander-v2"), "env.id"),
        (bad(env__id="LunarLanderContinuous-v3"), "env.id"),
        (bad(checkpoint_every=-1), "checkpoint_every"),
        (bad(tau=0.0), "tau"),
        (bad(tau=1.5), "tau"),
        (bad(adam_eps=0.0), "adam_eps"),
        (bad(weight_decay=-0.01), "weight_decay"),
        (bad(final_eval_episodes=-1), "final_eval_episodes"),
        (bad(eval_episodes=1_000_001), "eval_episodes"),  # its start seeds would reach the final evaluation's
    ],
)
def test_validate_names_the_bad_key_and_what_is_allowed(cfg, key):
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert message.startswith(f"{key}=") and "allowed" in message and "\n" not in message


def test_unknown_env_lists_valid_ids():
    with pytest.raises(ConfigError, match="LunarLander-v3"):
        validate(bad(env__id="Lunar"))


def test_constant_schedule_may_have_end_equal_start_and_defaults_are_valid():
    validate(TrainConfig())
    validate(bad(schedule__kind=ScheduleKind.constant, schedule__start=0.3, schedule__end=0.3))
    validate(bad(total_steps=None, max_time=300.0))


def test_cuda_without_a_gpu_is_refused_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="device=cuda.*no CUDA GPU"):
        validate(dataclasses.replace(TrainConfig(), device=Device.cuda))


def test_experiment_overrides_the_root_config_and_sweep_sets_multirun_params(tmp_path):
    cfg = settings(tmp_path, "experiment=trained_lander")
    assert (cfg.total_steps, cfg.n_step, cfg.env.max_episode_steps, cfg.buffer.capacity) == (500_000, 3, 1000, 100_000)
    assert cfg.schedule.end == 0.02
    # the recorded lander keeps the layout and clip it was trained with, whatever today's defaults
    assert (cfg.network.hidden_sizes, cfg.network.layer_norm, cfg.max_grad_norm) == ([256, 256], False, 10.0)
    from hydra.core.hydra_config import HydraConfig

    compose_config(["sweep=local_optimum"], tmp_path / "sweep")
    hydra = HydraConfig.get()
    assert hydra.mode.name == "MULTIRUN"
    assert dict(hydra.sweeper.params) == {"batch_size": "64,128,256", "lr": "0.0001,0.0003,0.001", "seed": "range(5)"}


# The exercise (../shared/SEED.md) and the estimator.py that matches its interface, written out here
# rather than read from conf/, so the experiment is checked against the source, not against itself.
EXERCISE = {
    "schedule.kind": ScheduleKind.constant,  # epsilon = 0.3, never decayed
    "schedule.start": 0.3,
    "schedule.end": 0.3,
    "gamma": 0.99,
    "batch_size": 256,
    "buffer.capacity": 10_000,  # ExperienceBuffer(10000, ...)
    "env.max_episode_steps": 500,  # env._max_episode_steps = 500
    "env.eval_max_episode_steps": None,  # evaluate: max_episode_length = 1000, LunarLander-v3's own limit
    "env.id": "LunarLander-v3",
    "network.hidden_sizes": [64, 64, 32],  # Linear(8, 64), ReLU, Linear(64, 64), ReLU, Linear(64, 32), ReLU
    "network.activation": Activation.relu,
    "network.layer_norm": False,
    "network.dueling": False,
    "lr": 1e-3,  # ActionValueEstimator(env, learning_rate=1e-3)
    "weight_decay": 0.01,  # torch.optim.AdamW's default
    "loss": Loss.mse,  # F.mse_loss
    "max_grad_norm": None,
    "target_update_interval": 1,  # no target network: bootstraps from the network being trained
    "tau": 1.0,
    "double_q": False,
    "n_step": 1,  # R + gamma * max_a Q(S', a)
    "learning_starts": 0,  # trains as soon as experience_buffer.is_filled(batch_size)
    "train_freq": 1,  # one train step per env step
    "gradient_steps": 1,
    "keep_best": False,  # saves the last weights
    "lr_anneal": False,
    "total_steps": 50_000,  # ~150 episodes, the exercise's 5 minutes (docs/local_optimum.md)
}


def key(cfg: TrainConfig, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_exercise_experiment_is_the_exercise_agent(tmp_path):
    cfg = settings(tmp_path, "experiment=exercise")
    assert {name: key(cfg, name) for name in EXERCISE} == EXERCISE
    validate(cfg)


def final_networks(tmp_path, *overrides: str) -> tuple[list, list, list[float]]:
    """The online and target weights at the end of a short exercise run, and its logged TD losses."""
    cfg = settings(tmp_path, "experiment=exercise", "total_steps=1100", "eval_episodes=0", "final_eval_episodes=0",
                   "checkpoint_every=0", "mlflow.enabled=false", *overrides)  # fmt: skip
    saved, losses = [], []
    learn(
        cfg, log=lambda metrics, step: losses.extend([metrics["loss"]] if "loss" in metrics else []), save=saved.append
    )
    return list(saved[-1]["q"].values()), list(saved[-1]["q_target"].values()), losses


def test_exercise_agent_bootstraps_from_the_network_it_trains(tmp_path):
    """target_update_interval=1 with tau=1 is no target network: after each update the target is the online net.
    An episode ends at least every 500 steps, so one after the first update (step 256) logs its losses."""
    online, target, losses = final_networks(tmp_path)
    assert losses and len(online) == 8
    assert all(torch.equal(a, b) for a, b in zip(online, target, strict=True))
    online, target, _ = final_networks(tmp_path, "target_update_interval=1000")  # a copy at 1000, 100 updates since
    assert not all(torch.equal(a, b) for a, b in zip(online, target, strict=True))


def test_weight_decay_reaches_the_optimizer_as_decoupled_decay(tmp_path):
    """With a zero TD error Adam's step is 0, so AdamW's decay alone scales every weight by 1 - lr * decay."""
    env = gymnasium.make("LunarLander-v3")
    cfg = settings(tmp_path, "experiment=exercise")
    q = build_estimator(cfg, env)
    assert isinstance(q.optimizer, torch.optim.AdamW) and q.optimizer.defaults["weight_decay"] == 0.01
    before = [p.detach().clone() for p in q.network.parameters()]
    observations = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    actions = np.zeros((4, 1), dtype=np.int64)
    q.train(observations, actions, q.predict(observations)[:, :1])
    for old, new in zip(before, q.network.parameters(), strict=True):
        torch.testing.assert_close(new.detach(), old * (1 - 1e-3 * 0.01), rtol=0, atol=1e-7)
    assert type(build_estimator(TrainConfig(), env).optimizer) is torch.optim.Adam  # no decay: plain Adam
    env.close()


def test_exercise_sweep_composes_to_its_grid_on_the_exercise_agent(tmp_path):
    compose_config(["sweep=exercise_local_optimum"], tmp_path / "sweep")
    hydra = HydraConfig.get()
    assert hydra.mode.name == "MULTIRUN"
    assert dict(hydra.sweeper.params) == {
        "experiment": "exercise",
        "batch_size": "32,64,128,256,512",
        "lr": "0.0001,0.0003,0.001",
        "seed": "range(5)",
    }
    # a job of the sweep: the exercise's agent with the grid's values on top
    cfg = settings(tmp_path, "experiment=exercise", "batch_size=32", "lr=0.0001", "seed=4")
    assert (cfg.batch_size, cfg.lr, cfg.seed) == (32, 1e-4, 4)
    assert {name: key(cfg, name) for name in EXERCISE if name not in ("batch_size", "lr")} == {
        name: value for name, value in EXERCISE.items() if name not in ("batch_size", "lr")
    }


@pytest.mark.parametrize(
    "group, registry, choices",
    [("schedule", SCHEDULES, ScheduleKind), ("buffer", BUFFERS, BufferKind)],
)
def test_each_registered_part_is_a_group_option_and_a_choice_and_nothing_else(tmp_path, group, registry, choices):
    """A schedule or buffer is its registry entry plus conf/<group>/<name>.yaml: the schema's choices come
    from the registry, and each option file selects its own entry."""
    options = sorted(path.stem for path in (CONF / group).glob("*.yaml"))
    assert options == sorted(registry) == sorted(member.value for member in choices)
    for name in options:
        assert getattr(settings(tmp_path, f"{group}={name}"), group).kind.value == name
