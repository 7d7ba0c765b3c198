"""DQN for gymnasium's LunarLander: the exercise's building blocks, importable one by one."""

from dqn.buffer import ExperienceBuffer
from dqn.estimator import ActionValueEstimator, compute_target_values
from dqn.policy import evaluate, select_action

__all__ = ["ActionValueEstimator", "ExperienceBuffer", "compute_target_values", "evaluate", "select_action"]
