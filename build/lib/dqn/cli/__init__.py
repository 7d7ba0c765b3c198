"""The commands: training (`python -m dqn.train`), evaluation and the sweep report."""
