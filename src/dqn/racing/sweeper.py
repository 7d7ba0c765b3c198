"""`hydra/sweeper=race`'s work: launch each round's jobs through the configured Hydra launcher, feed their
scores to the race (`dqn.racing.elimination`), and record on the parent run who was dropped, when and why.

A job's score is what the task function returns (`final_eval_return_mean`, fresh episodes of the weights it
delivers); a failed job scores None, which ranks below every score of its seed. Jobs an earlier command of
the same race finished are read from MLflow instead of run again, so a stopped race, run again, continues.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from mlflow import MlflowClient
from mlflow.entities import Run
from omegaconf import DictConfig

from dqn.racing.elimination import Race, run_race
from dqn.racing.plan import Plan, check_race
from dqn.report.statistics import FINAL_SCORE
from dqn.sweep_protocol import group_name, read_sweep, sweep_stopping, swept_keys
from dqn.tables import write_csv
from dqn.tracking.store import FolderLock, tracking_uri

log = logging.getLogger("dqn")
FALLBACK_SCORES = ("best_eval_return_mean", "eval_return_mean")  # as the task function scores a run without one
TABLE = "race.csv"
RACE_COLUMNS = ("round", "seeds", "config", "mean_rank", "p_gap_to_best", "dropped")
TAG_LIMIT = 5000  # MLflow's tag values


class RaceSweep:
    """The sweeper's work: the race's rounds, each one launch, and the record of the race."""

    def __init__(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.job_idx = 0
        self.swept = swept_keys(config)

    def sweep(self, arguments: list[str]) -> Race:
        plan = check_race(self.config, self.hydra_context.config_loader, arguments)
        lock = FolderLock(self.sweep_dir)  # a second command of the same race sees this one alive
        parent = self.parent()
        known = self.finished(parent, plan)
        groups = [self.group(plan, c) for c in range(len(plan.configs))]
        log.info(
            "race %s: %d configs, %s; %d of its jobs already finished",
            plan.signature, len(plan.configs), plan.tags["race_rules"], len(known),
        )  # fmt: skip

        def score(jobs: list[tuple[int, int]]) -> list[float | None]:
            todo = [job for job in jobs if (groups[job[0]], plan.first_seed + job[1]) not in known]
            if todo and not sweep_stopping(self.sweep_dir):
                returns = self.launcher.launch([plan.job(c, s) for c, s in todo], initial_job_idx=self.job_idx)
                self.job_idx += len(returns)
                for (c, s), result in zip(todo, returns, strict=True):
                    value = result.return_value if result.status is JobStatus.COMPLETED else None
                    known[(groups[c], plan.first_seed + s)] = value
            return [known.get((groups[c], plan.first_seed + s)) for c, s in jobs]

        def announce(round_: int, seeds: int, tested: list, fallen: list) -> None:
            out = {c for c, _, _ in fallen}
            ranks = ", ".join(
                f"{groups[c]} {rank:.2f}" + (f" (dropped, p={p:.3g})" if c in out else "") for c, rank, p in tested
            )
            log.info("race round %d, %d seeds each: mean ranks %s", round_, seeds, ranks)

        try:
            race = run_race(len(plan.configs), plan.rules, score, lambda: sweep_stopping(self.sweep_dir), announce)
        finally:
            lock.release()
        self.record(race, plan, groups, parent)
        return race

    def parent(self) -> tuple[MlflowClient, Run] | None:
        """The race's parent MLflow run, which dqn.run.sweep_callback opened or reopened for this command."""
        sweep = read_sweep(self.sweep_dir)
        if not self.config.mlflow.enabled or sweep is None:
            return None
        client = MlflowClient(tracking_uri(self.config.mlflow.tracking_uri, Path.cwd()))
        return client, client.get_run(sweep["parent_run_id"])

    def group(self, plan: Plan, config: int) -> str:
        """The config's group tag, as its jobs name it (dqn.sweep_protocol.group_name)."""
        return group_name(plan.job(config, 0), self.swept)

    def finished(self, parent: tuple[MlflowClient, Run] | None, plan: Plan) -> dict[tuple[str, int], float | None]:
        """{(group, seed): score} of the FINISHED jobs an earlier command of this race ran."""
        if parent is None:
            return {}
        client, run = parent
        jobs = client.search_runs(
            [run.info.experiment_id],
            f"tags.sweep_id = '{run.data.tags['sweep_id']}' and tags.`dqn.role` = 'job' "
            "and attributes.status = 'FINISHED'",
            max_results=50_000,
        )
        known = {}
        for job in jobs:
            metrics = job.data.metrics
            key = next((k for k in (FINAL_SCORE, *FALLBACK_SCORES) if k in metrics), None)
            known[(job.data.tags.get("group"), int(job.data.params["seed"]))] = metrics[key] if key else None
        return known

    def record(self, race: Race, plan: Plan, groups: list[str], parent: tuple[MlflowClient, Run] | None) -> None:
        """The race's table (race.csv: per round, each config's mean rank and p) and its outcome, on the parent."""
        dropped = {(d.round, d.config) for d in race.drops}
        rounds = [
            {"round": round_, "seeds": seeds, "config": groups[c], "mean_rank": f"{rank:.3f}",
             "p_gap_to_best": f"{p:.4g}", "dropped": (round_, c) in dropped}
            for round_, (seeds, tested) in enumerate(race.tests, start=1) for c, rank, p in tested
        ]  # fmt: skip
        path = write_csv(rounds, self.sweep_dir / TABLE, RACE_COLUMNS)
        eliminated = "; ".join(
            f"{groups[d.config]}: round {d.round} at {d.seeds} seeds, mean rank {d.mean_rank:.2f} vs "
            f"{d.best_mean_rank:.2f} for {groups[d.best]} (p={d.p_value:.3g})"
            for d in race.drops
        )
        seeds = {groups[c]: race.seeds_of(c) for c in range(len(groups))}
        log.info("race ended (%s) after %d jobs: left %s; dropped %s", race.ended, len(race.scores),
                 ", ".join(groups[c] for c in race.alive), eliminated or "none")  # fmt: skip
        if parent is None:
            return
        client, run = parent
        tags = {
            "race_end": race.ended,
            "race_left": ", ".join(groups[c] for c in race.alive),
            "race_eliminated": eliminated or "none",
            "race_seeds": json.dumps(seeds),
            "race_jobs": str(len(race.scores)),
        }
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value[:TAG_LIMIT])
        client.log_artifact(run.info.run_id, str(path))
