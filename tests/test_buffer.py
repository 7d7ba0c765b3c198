import numpy as np
import pytest

from dqn.buffer import ExperienceBuffer, NStepTransitions


def filled(n: int, capacity: int, seed: int = 0) -> ExperienceBuffer:
    buffer = ExperienceBuffer(capacity, (2,), (1,), rng=np.random.default_rng(seed))
    for i in range(n):
        buffer.append([i, -i], i % 4, float(i), [i + 1, -i - 1], i % 2 == 0)
    return buffer


def test_is_filled_once_it_holds_a_batch():
    buffer = filled(3, capacity=10)
    assert buffer.is_filled(3) and not buffer.is_filled(4)
    assert len(buffer) == 3


def test_wraps_around_overwriting_the_oldest():
    buffer = filled(13, capacity=10)
    assert len(buffer) == 10
    # slots 0..2 now hold transitions 10..12; 3..9 still hold 3..9
    assert buffer.observations[:, 0].tolist() == [10, 11, 12, 3, 4, 5, 6, 7, 8, 9]
    assert buffer.rewards[:3, 0].tolist() == [10, 11, 12]
    assert buffer.position == 3


def test_sample_is_a_named_batch_that_unpacks_like_the_exercise():
    batch = filled(20, capacity=50).sample(8)
    observations, actions, rewards, next_observations, dones = batch
    assert batch.dones is dones and batch.observations is observations and batch._fields[2] == "rewards"


def test_sample_shapes_and_dtypes():
    observations, actions, rewards, next_observations, dones = filled(20, capacity=50).sample(8)
    assert observations.shape == next_observations.shape == (8, 2)
    assert actions.shape == rewards.shape == dones.shape == (8, 1)
    assert observations.dtype == rewards.dtype == dones.dtype == np.float32
    assert actions.dtype == np.int64


def test_sample_draws_only_stored_transitions_and_keeps_them_aligned():
    buffer = filled(5, capacity=100)
    observations, actions, rewards, next_observations, dones = buffer.sample(500)
    i = observations[:, 0]
    assert set(i.tolist()) == {0, 1, 2, 3, 4}  # never an empty slot, every stored one
    np.testing.assert_array_equal(rewards[:, 0], i)
    np.testing.assert_array_equal(next_observations[:, 0], i + 1)
    np.testing.assert_array_equal(actions[:, 0], i % 4)
    np.testing.assert_array_equal(dones[:, 0], (i % 2 == 0).astype(np.float32))


def test_same_rng_seed_same_batches():
    a, b = filled(50, 100, seed=3).sample(16), filled(50, 100, seed=3).sample(16)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = filled(50, 100, seed=4).sample(16)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("n", [7, 23])
def test_state_dict_round_trip(n):
    buffer = filled(n, capacity=10)
    copy = ExperienceBuffer(10, (2,), (1,))
    copy.load_state_dict(buffer.state_dict())
    assert (copy.position, copy.size) == (buffer.position, buffer.size)
    np.testing.assert_array_equal(copy.observations, buffer.observations)
    np.testing.assert_array_equal(copy.dones, buffer.dones)


def collect(n, steps, gamma=0.5):
    """Feed (obs=i, action=i, reward=1) for each (terminated, truncated) in steps; return what comes out."""
    writer, out = NStepTransitions(n, gamma), []
    for i, (terminated, truncated) in enumerate(steps):
        out += writer.add(i, i, 1.0, i + 1, terminated, truncated)
    return out


def test_one_step_is_plain_dqn():
    out = collect(1, [(False, False), (False, False), (True, False)])
    assert out == [(0, 0, 1.0, 1, False), (1, 1, 1.0, 2, False), (2, 2, 1.0, 3, True)]


def test_n_step_returns_bootstrap_from_n_steps_later():
    out = collect(3, [(False, False)] * 4)
    assert out == [(0, 0, 1 + 0.5 + 0.25, 3, False), (1, 1, 1.75, 4, False)]


def test_termination_flushes_shorter_returns_as_done():
    out = collect(3, [(False, False), (False, False), (False, False), (True, False)])
    assert out == [(0, 0, 1.75, 3, False), (1, 1, 1.75, 4, True), (2, 2, 1.5, 4, True), (3, 3, 1.0, 4, True)]


def test_truncation_drops_partial_returns_and_starts_afresh():
    out = collect(3, [(False, False), (False, False), (False, True), (False, False)])
    assert out == [(0, 0, 1.75, 3, False)]  # steps 1 and 2 had no 3-step future; step 3 starts a new episode
