import pickle

import numpy as np
import pytest
import torch
from torch import nn

from dqn.environment import make_env
from dqn.estimator import ActionValueEstimator, numpy_layer


@pytest.fixture
def env():
    env = make_env("LunarLander-v3")
    yield env
    env.close()


def test_predict_one_observation_and_a_batch(env):
    estimator = ActionValueEstimator(env)
    observation, _ = env.reset(seed=0)
    assert estimator.predict(observation).shape == (4,)
    assert estimator.predict(np.stack([observation] * 5)).shape == (5, 4)
    assert isinstance(estimator.predict(observation), np.ndarray)


def test_greedy_action_is_argmax_of_predict(env):
    estimator = ActionValueEstimator(env, hidden_sizes=[32])
    for seed in range(5):
        observation, _ = env.reset(seed=seed)
        assert estimator.greedy_action(observation) == int(np.argmax(estimator.predict(observation)))


def test_train_moves_q_of_taken_actions_toward_targets(env):
    torch.manual_seed(0)
    estimator = ActionValueEstimator(env, hidden_sizes=[64], lr=1e-2, loss="mse")
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(32, 8)).astype(np.float32)
    actions = rng.integers(0, 4, size=(32, 1))
    targets = np.full((32, 1), 5.0, dtype=np.float32)
    losses = [estimator.train(observations, actions, targets) for _ in range(200)]
    assert losses[-1] < 0.01 * losses[0]
    taken = np.take_along_axis(estimator.predict(observations), actions, axis=1)
    np.testing.assert_allclose(taken, 5.0, atol=0.1)


def test_gradient_clipping_bounds_the_update(env):
    torch.manual_seed(0)
    estimator = ActionValueEstimator(env, hidden_sizes=[16], lr=1e-3, loss="mse", max_grad_norm=1e-6)
    before = [p.detach().clone() for p in estimator.network.parameters()]
    obs = np.ones((4, 8), dtype=np.float32)
    estimator.train(obs, np.zeros((4, 1)), np.full((4, 1), 1e6, dtype=np.float32))
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in estimator.network.parameters()])
    assert grad_norm <= 1e-6 * 1.01
    # Adam normalises step size, so weights still move, but by at most ~lr each
    moved = max((p - b).abs().max().item() for p, b in zip(estimator.network.parameters(), before, strict=True))
    assert 0 < moved <= 1.1e-3


def reloaded(estimator: ActionValueEstimator, env, path) -> ActionValueEstimator:
    """`estimator`'s weights saved and loaded into a default-constructed estimator (a plain 256x256
    network), which must rebuild the saved layout to take them."""
    estimator.save_weights(path)
    loaded = ActionValueEstimator(env)
    loaded.load_weights(path)
    return loaded


def test_save_and_load_into_a_default_constructed_estimator(env, tmp_path):
    trained = ActionValueEstimator(env, hidden_sizes=[32, 16], activation="tanh")
    fresh = reloaded(trained, env, tmp_path / "lunar-dqn.pth")
    observation, _ = env.reset(seed=1)
    np.testing.assert_array_equal(fresh.predict(observation), trained.predict(observation))
    assert fresh.hidden_sizes == [32, 16] and fresh.activation == "tanh"


def test_copy_is_independent_until_synced(env):
    online = ActionValueEstimator(env, hidden_sizes=[16])
    target = online.copy()
    observation, _ = env.reset(seed=0)
    obs = np.stack([observation] * 8)
    online.train(obs, np.zeros((8, 1)), np.full((8, 1), 100.0, dtype=np.float32))
    assert not np.array_equal(online.predict(observation), target.predict(observation))
    target.sync_from(online)
    np.testing.assert_array_equal(online.predict(observation), target.predict(observation))


def test_soft_sync_moves_the_target_a_fraction_of_the_way(env):
    online, target = ActionValueEstimator(env, hidden_sizes=[16]), ActionValueEstimator(env, hidden_sizes=[16])
    before = [p.detach().clone() for p in target.network.parameters()]
    target.sync_from(online, tau=0.25)
    for old, new, theirs in zip(before, target.network.parameters(), online.network.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * theirs)


def test_dueling_head_splits_q_into_state_value_plus_centred_advantages(env, tmp_path):
    torch.manual_seed(0)
    estimator = ActionValueEstimator(env, hidden_sizes=[16], dueling=True)
    observations = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    head = estimator.network[-1]
    with torch.no_grad():
        features = estimator.network[:-1](torch.as_tensor(observations))
        value = head.value(features).numpy()
    # The advantages are centred per state, so the mean over actions of Q is the state value.
    np.testing.assert_allclose(estimator.predict(observations).mean(axis=1, keepdims=True), value, atol=1e-6)

    loaded = reloaded(estimator, env, tmp_path / "dueling.pth")
    assert loaded.dueling
    np.testing.assert_array_equal(loaded.predict(observations), estimator.predict(observations))


def test_layer_norm_normalises_each_hidden_layer_and_survives_save_and_load(env, tmp_path):
    torch.manual_seed(0)
    estimator = ActionValueEstimator(env, hidden_sizes=[32, 16], layer_norm=True, lr=1e-2)
    observations = np.random.default_rng(0).normal(scale=5, size=(50, 8)).astype(np.float32)
    norms = [m for m in estimator.network if isinstance(m, nn.LayerNorm)]
    assert [m.normalized_shape for m in norms] == [(32,), (16,)]
    with torch.no_grad():
        normalised = estimator.network[:2](torch.as_tensor(observations))  # Linear -> LayerNorm
    np.testing.assert_allclose(normalised.mean(dim=1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(normalised.std(dim=1, unbiased=False).numpy(), 1, atol=1e-3)

    actions = np.zeros((50, 1), dtype=np.int64)
    estimator.train(observations, actions, np.full((50, 1), 3.0, dtype=np.float32))  # moves gain and shift too
    flat = np.linspace(-1e-3, 1e-3, 32, dtype=np.float32)  # variance ~3e-7, under eps=1e-5: where eps sits matters
    with torch.no_grad():
        expected = norms[0](torch.as_tensor(flat)).numpy()
    np.testing.assert_allclose(numpy_layer(norms[0])(flat), expected, rtol=1e-4, atol=1e-5)
    loaded = reloaded(estimator, env, tmp_path / "ln.pth")
    assert loaded.layer_norm
    np.testing.assert_array_equal(loaded.predict(observations), estimator.predict(observations))


def test_adam_eps_reaches_the_optimizer(env):
    estimator = ActionValueEstimator(env, hidden_sizes=[8], adam_eps=1.5e-4)
    assert estimator.optimizer.param_groups[0]["eps"] == 1.5e-4


@pytest.mark.parametrize(
    ("activation", "dueling", "layer_norm"),
    [("relu", False, False), ("tanh", False, False), ("elu", True, False), ("relu", False, True),
     ("elu", True, True), ("gelu", False, False)],
)  # fmt: skip
def test_greedy_action_is_the_argmax_of_the_current_weights(env, activation, dueling, layer_norm):
    """The numpy fast path must follow every in-place change of the weights, in the estimator it
    belongs to and not in its copies."""
    torch.manual_seed(0)
    online = ActionValueEstimator(env, [32, 16], activation, dueling, layer_norm, lr=1e-2)
    assert (online._numpy_layers is None) == (activation == "gelu")  # numpy has no gelu: torch serves it
    target = online.copy()
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(200, 8)).astype(np.float32)

    def agrees(estimator: ActionValueEstimator) -> bool:
        return [estimator.greedy_action(o) for o in observations] == list(estimator.predict(observations).argmax(1))

    assert agrees(online)
    actions = rng.integers(0, 4, size=(200, 1))
    for _ in range(20):  # moves the online weights far enough to change many argmaxes
        online.train(observations, actions, rng.normal(scale=10, size=(200, 1)).astype(np.float32))
    assert agrees(online) and agrees(target)
    pickled = pickle.loads(pickle.dumps(online))
    pickled.train(observations, actions, rng.normal(scale=10, size=(200, 1)).astype(np.float32))
    assert agrees(pickled) and agrees(online)  # a pickled copy views its own parameters, not the original's
    assert [online.greedy_action(o) for o in observations] != [target.greedy_action(o) for o in observations]
    target.sync_from(online)
    assert agrees(target)
