"""The lander that ships in trained/ loads as in the exercise and flies."""

from pathlib import Path

import numpy as np

from dqn import ActionValueEstimator
from dqn.environment import make_env
from dqn.policy import evaluate_episodes

TRAINED = Path(__file__).resolve().parents[1] / "trained"


def test_shipped_lander_loads_into_a_default_estimator_and_lands():
    env = make_env("LunarLander-v3")
    estimator = ActionValueEstimator(env)
    estimator.load_weights(TRAINED / "lunar-dqn.pth")
    episodes = evaluate_episodes(estimator, env, 5, seed=100)
    assert np.mean([e.score for e in episodes]) > 150  # an untrained network scores around -200
    assert sum(not e.truncated and e.last_reward == 100 for e in episodes) >= 3  # came to rest


def test_shipped_evaluation_record_meets_the_bar():
    text = (TRAINED / "evaluation.txt").read_text()
    assert "100 greedy episodes" in text
    mean = float(text.split("mean ")[1].split()[0])
    assert mean >= 250
