"""The exercise's notebook cells, as written there, run against our building blocks."""

import numpy as np

from dqn import ActionValueEstimator, ExperienceBuffer, compute_target_values, evaluate, select_action
from dqn.environment import make_env


def train(estimator, observations, actions, rewards, next_observations, dones, gamma):
    target_q = compute_target_values(estimator, rewards, next_observations, dones, gamma)
    return estimator.train(observations, actions, target_q)


def test_notebook_training_loop_and_evaluation(tmp_path):
    import gymnasium

    env = gymnasium.make("LunarLander-v3", render_mode="rgb_array")
    env._max_episode_steps = 500
    estimator = ActionValueEstimator(env)
    observation, _ = env.reset()
    assert estimator.predict(observation).shape == (4,)

    epsilon, gamma, batch_size, max_steps, max_episode_length = 0.3, 0.99, 256, 600, 1000
    experience_buffer = ExperienceBuffer(10000, env.observation_space.shape, (1,))
    total = 0
    while total < max_steps:
        episode_length, episode_score = 0, 0
        observation, _ = env.reset()
        done = False
        while not done:
            action = select_action(env, estimator, observation, epsilon)
            next_observation, reward, done, _, _ = env.step(action)
            if episode_length >= max_episode_length - 1:
                done = True
            experience_buffer.append(observation, action, reward, next_observation, done)
            if experience_buffer.is_filled(batch_size):
                observations, actions, rewards, next_observations, dones = experience_buffer.sample(batch_size)
                loss = train(estimator, observations, actions, rewards, next_observations, dones, gamma)
                assert np.isfinite(loss)
            observation = next_observation
            episode_length += 1
            episode_score += reward
            total += 1
    estimator.save_weights(tmp_path / "lunar-dqn.pth")

    fresh = ActionValueEstimator(env)
    fresh.load_weights(tmp_path / "lunar-dqn.pth")
    score = evaluate(fresh, make_env("LunarLander-v3", max_episode_steps=200, render_mode="rgb_array"))
    assert np.isfinite(score)
