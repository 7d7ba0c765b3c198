"""One score per (config, seed): a killed search's finished runs, and a grid job retried as a new run, count once."""

import csv
import os
import signal
from pathlib import Path

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from dqn.report.sweep_report import LEFT_OUT_REPEAT, LEFT_OUT_SUPERSEDED, write_report
from tests.conftest import runs_of
from tests.services import wait_until
from tests.test_search import search, split, start, trials
from tests.test_sweep_report import add_job, add_sweep, evaluations

pytestmark = pytest.mark.slow  # real processes and services: make test-all


def rows(path: Path) -> dict[str, list[float]]:
    """report.csv: group -> its seeds' scores, sorted."""
    with path.open(newline="") as file:
        return {row["group"]: sorted(float(s) for s in row["seeds"].split()) for row in csv.DictReader(file)}


def test_a_grid_job_retried_as_a_new_run_counts_once(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("grid", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = add_sweep(client, experiment, tmp_path, "grid-1", 1000)
    for seed, final in enumerate([10.0, 20.0]):
        add_job(client, experiment, parent, "grid-1", "lr=0.001", seed, evaluations([0, 5, 9], 0.0, final, seed), 1001)
    # seed 1 again: first a retry that was killed, then one that finished with another score; the last one counts
    add_job(client, experiment, parent, "grid-1", "lr=0.001", 1, [], 1002, status="KILLED")
    add_job(client, experiment, parent, "grid-1", "lr=0.001", 1, evaluations([0, 5, 9], 0.0, 30.0, 1), 1003)

    report = write_report(client, parent, tmp_path / "out")
    assert rows(tmp_path / "out" / "report.csv") == {"lr=0.001": [10.0, 30.0]}
    assert report.left_out == ((LEFT_OUT_REPEAT, 2),) and not report.skipped
    assert f"left out 2 runs (2 {LEFT_OUT_REPEAT})" in (tmp_path / "out" / "report.md").read_text()


# Two trials a batch, run one job after another (the basic launcher): trial 1's jobs keep the batch open
# after trial 0's have FINISHED.
TWICE = [
    "lr=choice(0.0005, 0.001)", "hydra.sweeper.sampler=grid", "hydra.sweeper.study_name=twice",
    "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.seeds_per_trial=2",
]  # fmt: skip


def trial_runs(store: str, number: int, status: str) -> list:
    _, children = split(runs_of(store))
    return [c for c in children if c.data.tags.get("trial_number") == str(number) and c.info.status == status]


def test_a_search_killed_between_a_trials_finished_jobs_and_its_batch_counts_each_seed_once(project, store):
    first = start(project, *TWICE, log="first.log")
    wait_until(
        lambda: len(trial_runs(store, 0, "FINISHED")) == 2 and trial_runs(store, 1, "RUNNING"),
        300,
        "trial 0's two jobs to finish while trial 1's first runs",
        every=0.1,
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    lost = {t.number: t for t in trials(project, "twice")}
    assert lost[0].state == TrialState.RUNNING, "the batch had returned: trial 0 was told before the kill"

    done = search(project, *TWICE)
    assert done.returncode == 0, done.stderr[-3000:]
    study = trials(project, "twice")
    reruns = {t.user_attrs["rerun_of"]: t for t in study if "rerun_of" in t.user_attrs}
    assert sorted(reruns) == [0, 1] and all(t.state == TrialState.COMPLETE for t in reruns.values())

    _, children = split(runs_of(store))
    superseded = [c for c in children if c.data.tags.get("trial_number") in ("0", "1")]
    assert len(superseded) == 3  # trial 0's two FINISHED runs and trial 1's killed one
    for run in superseded:
        number = int(run.data.tags["trial_number"])
        assert run.data.tags["superseded"] == "true"
        assert run.data.tags["superseded_by"] == f"trial {reruns[number].number}"
    counted = [c for c in children if c.data.tags.get("superseded") != "true"]
    expected: dict[str, list[float]] = {}
    for run in counted:  # the reruns' runs: every one FINISHED, one per (group, seed)
        assert run.info.status == "FINISHED"
        expected.setdefault(run.data.tags["group"], []).append(run.data.metrics["final_eval_return_mean"])
    assert sorted(len(scores) for scores in expected.values()) == [2, 2]

    (sweep_dir,) = {path.parent for path in (project / "runs").rglob("report.csv")}  # the 2nd command's
    assert rows(sweep_dir / "report.csv") == {group: sorted(scores) for group, scores in expected.items()}
    assert f"left out 3 runs (3 {LEFT_OUT_SUPERSEDED})" in (sweep_dir / "report.md").read_text()
    assert f"left out 3 runs (3 {LEFT_OUT_SUPERSEDED})" in done.stdout
