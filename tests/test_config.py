import dataclasses

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from dqn.config import ConfigError, Device, ScheduleKind, TrainConfig, validate
from tests.conftest import compose_config


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
