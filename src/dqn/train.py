"""`python -m dqn.train`: compose the config, validate it, train one agent inside one MLflow run.

Sweeps are Hydra's: `python -m dqn.train -m batch_size=128,256 lr=1e-4,5e-4`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dqn import tracking
from dqn.config import ConfigError, TrainConfig, register_configs, validate
from dqn.learn import learn
from dqn.plots import learning_curve
from dqn.progress import Progress

log = logging.getLogger("dqn")
register_configs()


def run_name(overrides: list[str], seed: int) -> str:
    """A readable name from what the command line changed, e.g. `batch_size=256,lr=0.0005,seed=3`."""
    parts = [o for o in overrides if not o.startswith(("mlflow.", "hydra", "+hydra", "~"))]
    if not any(p.startswith("seed=") for p in parts):
        parts.append(f"seed={seed}")
    return ",".join(parts)[:250]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def train(cfg: DictConfig) -> float | None:
    """Train one agent as `cfg` says; return its final greedy evaluation mean (the sweep objective)."""
    settings: TrainConfig = OmegaConf.to_object(cfg)
    try:
        validate(settings)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    root = Path.cwd()
    commit = tracking.git_commit(root)
    tags = {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "hydra_overrides": " ".join(overrides),
        "output_dir": str(out_dir.resolve()),
    }
    uri = tracking.tracking_uri(settings.mlflow.tracking_uri, root)
    name = run_name(overrides, settings.seed)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # SLURM preemption ends the run as KILLED, like Ctrl-C

    with tracking.tracked_run(
        uri, tracking.experiment_name(settings.mlflow.experiment_name), name, tags, settings.mlflow.enabled
    ) as recorder:
        log.info("run %s (%s) tracked at %s", recorder.run_id, name, uri)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        recorder.log_params(tracking.flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
        recorder.log_artifact(out_dir / "config.yaml")
        progress = Progress(settings.total_steps)

        def record(metrics: dict[str, float], step: int) -> None:
            recorder.log(metrics, step)
            progress.update(metrics, step)

        try:
            estimator = learn(settings, record)
        finally:
            progress.close()
        estimator.save_weights(out_dir / "lunar-dqn.pth")
        learning_curve(recorder.history, out_dir / "learning_curve.png")
        for artifact in ("lunar-dqn.pth", "learning_curve.png"):
            recorder.log_artifact(out_dir / artifact)

    evals = recorder.history.get("eval_return_mean")
    final = evals[-1][1] if evals else None
    log.info("done: final greedy evaluation mean %s; outputs in %s", final, out_dir)
    return final


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
