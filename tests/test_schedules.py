import pytest

from dqn.schedules import make_schedule


def test_constant_is_constant():
    epsilon = make_schedule("constant", 0.3, 0.3, 1)
    assert epsilon(0) == epsilon(10**6) == 0.3


def test_linear_endpoints_midpoint_and_flat_tail():
    epsilon = make_schedule("linear", 1.0, 0.1, 1000)
    assert epsilon(0) == 1.0
    assert epsilon(500) == pytest.approx(0.55)
    assert epsilon(1000) == pytest.approx(0.1)
    assert epsilon(50_000) == pytest.approx(0.1)


def test_exponential_halves_distance_to_end_each_half_life():
    epsilon = make_schedule("exponential", 1.0, 0.2, 100)
    assert epsilon(0) == 1.0
    assert epsilon(100) == pytest.approx(0.6)
    assert epsilon(200) == pytest.approx(0.4)
    assert epsilon(10**6) == pytest.approx(0.2)


def test_unknown_kind_names_the_allowed_ones():
    with pytest.raises(ValueError, match="constant, linear, exponential"):
        make_schedule("cosine", 1.0, 0.1, 10)
