"""The Hydra configs, shipped in the package so an installed dqn finds them (the repo's `conf/` links here)."""
