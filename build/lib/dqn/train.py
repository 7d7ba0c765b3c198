"""`python -m dqn.train`: the training command, kept at the name users type (it lives in `dqn.cli.train`)."""

from dqn.cli.train import main

if __name__ == "__main__":
    main()
