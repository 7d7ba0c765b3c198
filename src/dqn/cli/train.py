"""The training command (`python -m dqn.train`, `dqn-train`): compose the config, validate it, train one agent
inside one MLflow run.

Sweeps are Hydra's: `python -m dqn.train -m batch_size=128,256 lr=1e-4,5e-4`.
`python -m dqn.train resume=<run_id>` continues a KILLED or FAILED run, or one whose process is gone,
from its last checkpoint.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dqn.cli.help import describe
from dqn.cli.refusals import check_command_line
from dqn.config import (
    ConfigError,
    SearchConfig,
    TrainConfig,
    register_configs,
    register_resolvers,
)
from dqn.redaction import redact_logs
from dqn.run.job import labelled, redact_hydra_files, run_job
from dqn.run.resume import ResumeError, in_resumed_folder
from dqn.run.signals import Interrupted
from dqn.state import CheckpointMismatch
from dqn.tracking.store import TrackingUnavailable

log = logging.getLogger("dqn")
register_configs()
register_resolvers()

HELP = """python -m dqn.train: train one DQN agent on LunarLander, tracked in MLflow.

  python -m dqn.train [key=value ...] [group=option ...]     one run
  python -m dqn.train -m batch_size=64,128 seed='range(5)'   a sweep: one job per combination
  python -m dqn.train resume=<run id> [key=value ...]        continue a stopped run

Config groups (group=option):
$APP_CONFIG_GROUPS
Keys (key = default, then what it means):
{keys}

Python's and Hydra's flags: --cfg job (print the composed config), --info, --hydra-help.
"""
OmegaConf.register_new_resolver(
    "dqn.train_help", lambda: HELP.format(keys="\n".join(describe(TrainConfig)).replace("$", "$$")), replace=True
)

USER_ERRORS = (ConfigError, ResumeError, CheckpointMismatch, TrackingUnavailable)


def train(cfg: DictConfig) -> float | None:
    """Train one agent as `cfg` says; return the score of the weights it delivers (the sweep objective).

    Bad input exits 2 with one line and no run. A signal ends the run KILLED with one line saying how
    to resume it. In a multirun, a job that fails or is stopped is recorded as such and the sweep goes
    on (the sweep reports them at its end).
    """
    hydra_cfg = HydraConfig.get()
    redact_logs()
    redact_hydra_files(hydra_cfg)
    try:
        with labelled(hydra_cfg):
            return run_job(cfg, hydra_cfg)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        if stop.requeue is not None:
            stop.requeue()  # submitit requeues the job (or says why not) and ends this process
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return None
        sys.exit(130)
    except Exception:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        log.exception("job %s failed; the sweep goes on", hydra_cfg.job.num)
        return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return train(cfg)


def main() -> None:
    """The command: what Hydra would refuse while composing is refused first, in one line (exit 2); a
    resumed run is kept in its own folder."""
    check_command_line(sys.argv[1:], "dqn.conf", "train", {"": TrainConfig, "hydra.sweeper.": SearchConfig})
    redact_logs()  # Hydra's own lines too (a launcher lists each job's overrides)
    sys.argv[1:] = in_resumed_folder(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
