"""An Optuna search as a Hydra sweeper: the search space, the sweeper, each job's pruning, the results."""
