"""The Hydra configs, shipped in the package so that an installed dqn finds them (`conf/` at the repo root links here)."""
