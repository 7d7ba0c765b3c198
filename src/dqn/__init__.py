"""DQN for gymnasium's LunarLander: the exercise's building blocks, importable one by one."""

from dqn.agent import compute_target_values, evaluate, select_action
from dqn.buffer import ExperienceBuffer
from dqn.estimator import ActionValueEstimator

__all__ = ["ActionValueEstimator", "ExperienceBuffer", "compute_target_values", "evaluate", "select_action"]
