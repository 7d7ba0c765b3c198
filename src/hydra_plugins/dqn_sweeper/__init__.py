"""The Hydra plugin side of `dqn.search`: Hydra instantiates sweepers only from the `hydra_plugins` package."""
