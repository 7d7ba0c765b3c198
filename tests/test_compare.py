"""The sweep report: statistics against hand-computed values, then `python -m dqn.compare` on a real MLflow store."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from dqn.compare import main
from dqn.summary import GroupStats, SeedRun, iqm, iqm_curves, summarize, verdict


def seed_run(group: str, seed: int, evals: list[tuple[int, float, float | None]], truncated: float = 0.0) -> SeedRun:
    return SeedRun(group, seed, evals[-1][1] if evals else None, truncated, evals)


# --- statistics ---


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(range(1, 9)) == pytest.approx((3 + 4 + 5 + 6) / 4)
    assert iqm([8, 1, 100, 3, 5, 2, 6, 4]) == pytest.approx((3 + 4 + 5 + 6) / 4)  # order and outliers don't matter
    assert iqm([-50, 180, 210, 250]) == pytest.approx((180 + 210) / 2)


def test_group_statistics_match_hand_computed_values():
    runs = [  # (env step, eval_return_mean, train_seconds); seed 3 is given out of step order
        seed_run("lr=0.001", 0, [(10_000, 50, 30.0), (20_000, 205, 61.0), (30_000, 250, 95.0)], truncated=0.0),
        seed_run("lr=0.001", 1, [(10_000, 100, 31.0), (20_000, 150, 60.0), (30_000, 180, 92.0)], truncated=0.6),
        seed_run("lr=0.001", 2, [(10_000, 210, 29.0), (20_000, 190, 58.0), (30_000, 210, 90.0)], truncated=0.5),
        SeedRun("lr=0.001", 3, -50.0, 0.9, [(30_000, -50, 99.0), (10_000, 220, 33.0), (20_000, 100, 66.0)]),
    ]
    (row,) = summarize(runs)
    finals = [250, 180, 210, -50]
    mean = sum(finals) / 4
    assert row.group == "lr=0.001" and row.n_seeds == 4 and row.note == ""
    assert row.iqm == pytest.approx((180 + 210) / 2)
    assert row.mean == pytest.approx(mean)
    assert row.std == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in finals) / 4))  # ddof=0
    assert row.success_rate == pytest.approx(2 / 4)  # 250 and 210
    assert row.hover_rate == pytest.approx(2 / 4)  # 0.6 and 0.9; exactly 0.5 is not hovering
    assert row.n_reached_200 == 3  # seed 3 reached 200 at 10k and then collapsed
    assert row.median_steps_to_200 == pytest.approx(10_000)  # median of 20k, 10k, 10k
    assert row.median_seconds_to_200 == pytest.approx(33.0)  # median of 61, 29, 33
    assert min(finals) <= row.ci_low <= row.iqm <= row.ci_high <= max(finals)


def test_a_final_return_of_exactly_200_is_a_success():
    (row,) = summarize([seed_run("g", 0, [(1, 200.0, 1.0)])])
    assert row.success_rate == 1.0 and row.n_reached_200 == 1 and row.median_steps_to_200 == 1


def test_no_seed_reaching_200_leaves_the_medians_empty():
    (row,) = summarize([seed_run("g", s, [(1, 150.0, 1.0)]) for s in range(3)])
    assert row.n_reached_200 == 0 and row.median_steps_to_200 is None and row.median_seconds_to_200 is None


def test_grouping_ignores_the_seed_and_a_single_seed_collapses_the_ci():
    runs = [seed_run("a", seed, [(1, 100.0 + seed, 1.0)]) for seed in range(5)] + [seed_run("b", 7, [(1, 42.0, 1.0)])]
    rows = {row.group: row for row in summarize(runs)}
    assert rows["a"].n_seeds == 5 and rows["b"].n_seeds == 1
    b = rows["b"]
    assert b.iqm == b.ci_low == b.ci_high == b.mean == pytest.approx(42.0) and b.std == 0.0


def test_the_ci_is_reproducible():
    runs = [seed_run("a", seed, [(1, float(v), 1.0)]) for seed, v in enumerate([5, 90, 20, 300, 150, 60])]
    assert summarize(runs) == summarize(list(reversed(runs)))


def test_rows_are_sorted_best_first_and_groups_without_evaluations_last():
    runs = [
        seed_run("mid", 0, [(1, 200.0, 1.0)]),
        seed_run("none", 0, []),
        seed_run("top", 0, [(1, 300.0, 1.0)]),
        seed_run("low", 0, [(1, 100.0, 1.0)]),
    ]
    rows = summarize(runs)
    assert [row.group for row in rows] == ["top", "mid", "low", "none"]
    assert rows[-1].n_seeds == 1 and rows[-1].iqm is None and rows[-1].note == "no evaluations"


def test_runs_that_did_not_finish_are_not_seeds_but_are_noted():
    runs = [
        seed_run("a", 0, [(1, 100.0, 1.0)]),
        SeedRun("a", 1, None, status="FAILED"),
        SeedRun("b", 0, None, status="KILLED"),
    ]
    rows = {row.group: row for row in summarize(runs)}
    assert rows["a"].n_seeds == 1 and rows["a"].iqm == 100.0 and rows["a"].note == "skipped 1 FAILED"
    assert rows["b"].n_seeds == 0 and rows["b"].iqm is None and rows["b"].note == "no finished runs; skipped 1 KILLED"


def row(group: str, value: float, low: float, high: float) -> GroupStats:
    return GroupStats(group, 3, iqm=value, ci_low=low, ci_high=high)


def test_verdict_says_whether_the_best_ci_clears_the_runner_up():
    separated = verdict([row("lr=0.001", 250, 150.0, 260), row("defaults", 120, 90, 149.9)])
    assert "Best: lr=0.001" in separated and "clear of the runner-up defaults" in separated
    touching = verdict([row("lr=0.001", 250, 150.0, 260), row("defaults", 120, 90, 150.0)])
    assert "Best: lr=0.001" in touching and "not separated" in touching and "clear" not in touching


def test_verdict_with_one_group_or_none():
    assert "Only one group" in verdict([row("defaults", 120, 90, 150)])
    assert "nothing to compare" in verdict([row("defaults", 120, 90, 150), GroupStats("empty", 2, note="x")])
    assert verdict([GroupStats("empty", 2)]) == "No group has an evaluation to compare."


def test_curves_use_the_steps_all_seeds_share():
    runs = [
        seed_run("a", 0, [(10, 1.0, 1.0), (20, 2.0, 2.0), (30, 3.0, 3.0)]),
        seed_run("a", 1, [(10, 5.0, 1.0), (20, 6.0, 2.0)]),
        seed_run("b", 0, [(10, 7.0, 1.0)]),
        seed_run("c", 0, []),
    ]
    curves = iqm_curves(runs)
    assert set(curves) == {"a", "b"}
    np.testing.assert_array_equal(curves["a"].steps, [10, 20])
    np.testing.assert_allclose(curves["a"].iqm, [3.0, 4.0])  # two seeds: nothing trimmed
    assert np.all(curves["a"].low <= curves["a"].iqm) and np.all(curves["a"].iqm <= curves["a"].high)
    np.testing.assert_allclose([curves["b"].low[0], curves["b"].high[0]], [7.0, 7.0])


# --- the command, on a real store ---

EXPERIMENT = "dqn-lunar-lander"
STEPS = (10_000, 20_000, 30_000)
# group -> per seed: eval_return_mean at STEPS, final eval_truncated_fraction; train_seconds = step / 1000 * (1 + seed)
SWEEP = {
    "batch_size=256,lr=0.0005": [([120, 210, 260], 0.0), ([150, 190, 240], 0.0), ([205, 230, 250], 0.0)],
    "lr=0.001": [([-100, 50, 100], 0.8), ([0, 150, 210], 0.0), ([-200, -50, -20], 0.6)],
    "defaults": [([0, 100, 150], 0.0), ([10, 110, 160], 0.0), ([20, 120, 170], 0.0)],
}


def add_run(
    client: MlflowClient, experiment_id: str, tags: dict[str, str], start: int, status: str = "FINISHED"
) -> str:
    run_id = client.create_run(experiment_id, start_time=start, tags=tags).info.run_id
    client.set_terminated(run_id, status)
    return run_id


def add_sweep(client: MlflowClient, experiment_id: str, root: Path, sweep_id: str, start: int) -> str:
    tags = {"dqn.role": "sweep", "sweep_id": sweep_id, "sweep_dir": str(root / "multirun" / sweep_id)}
    return add_run(client, experiment_id, tags, start, status="RUNNING")


def add_job(client, experiment_id, parent, sweep_id, group, seed, metrics, start, status="FINISHED") -> str:
    tags = {"mlflow.parentRunId": parent, "dqn.role": "job", "sweep_id": sweep_id, "group": group}
    run_id = add_run(client, experiment_id, tags, start, status)
    client.log_param(run_id, "seed", str(seed))
    client.log_batch(run_id, metrics=[Metric(key, value, start, step) for key, value, step in metrics])
    return run_id


def evaluations(returns: list[float], truncated: float, seed: int) -> list[tuple[str, float, int]]:
    metrics = []
    for i, (step, value) in enumerate(zip(STEPS, returns, strict=True)):
        metrics += [
            ("eval_return_mean", float(value), step),
            ("eval_return_std", 10.0, step),
            ("eval_truncated_fraction", truncated if i == len(STEPS) - 1 else 0.0, step),
            ("train_seconds", step / 1000 * (1 + seed), step),
            ("eval_length_mean", 300.0, step),
            ("episode_return", -500.0, step - 1),
        ]
    return metrics


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str, dict[str, str], Path]:
    """One store for the module (creating one takes seconds): a full sweep, one that only failed, one never evaluated.

    They start in that order, so the last is the most recent sweep.
    """
    root = tmp_path_factory.mktemp("project")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    parents = {}
    sweep = "2026-11-27_05-40-12_ab12"
    parents[sweep] = add_sweep(client, experiment_id, root, sweep, 1000)
    for group, seeds in SWEEP.items():
        for seed, (returns, truncated) in enumerate(seeds):
            add_job(
                client, experiment_id, parents[sweep], sweep, group, seed, evaluations(returns, truncated, seed), 1001
            )
    add_job(client, experiment_id, parents[sweep], sweep, "batch_size=256,lr=0.0005", 3, [], 1002, status="FAILED")

    failed = "2026-11-27_06-00-00_cd34"
    parents[failed] = add_sweep(client, experiment_id, root, failed, 2000)
    add_job(client, experiment_id, parents[failed], failed, "defaults", 0, [], 2001, status="FAILED")

    empty = "2026-11-27_07-00-00_ef56"
    parents[empty] = add_sweep(client, experiment_id, root, empty, 3000)
    for seed in range(2):
        add_job(client, experiment_id, parents[empty], empty, "defaults", seed, [("episode_return", -100.0, 50)], 3001)
    return client, uri, parents, root


def run_compare(uri: str, *args: str) -> int:
    return main(["--tracking-uri", uri, "--experiment", EXPERIMENT, *args])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_compare_reports_a_sweep_and_logs_the_files_to_its_parent(store, capsys):
    client, uri, parents, root = store
    sweep = "2026-11-27_05-40-12_ab12"
    assert run_compare(uri, "--sweep-id", sweep) == 0
    out = root / "multirun" / sweep  # the parent's sweep_dir tag

    rows = read_csv(out / "report.csv")
    assert [r["group"] for r in rows] == ["batch_size=256,lr=0.0005", "defaults", "lr=0.001"]
    best, mid, worst = rows
    assert best["n_seeds"] == "3" and best["note"] == "skipped 1 FAILED"  # the FAILED job is not a seed
    assert float(best["iqm"]) == pytest.approx(250.0)  # three seeds: nothing trimmed
    assert float(best["success_rate"]) == 1.0 and float(best["hover_rate"]) == 0.0
    assert float(best["median_steps_to_200"]) == 20_000  # reached at 20k, 30k, 10k
    assert float(best["median_seconds_to_200"]) == pytest.approx(30.0)  # 20 (seed 0), 60 (seed 1), 30 (seed 2)
    assert float(best["std"]) == pytest.approx(math.sqrt(200 / 3))
    assert float(mid["iqm"]) == pytest.approx(160.0) and float(mid["success_rate"]) == 0.0
    assert mid["n_reached_200"] == "0" and mid["median_steps_to_200"] == "" and mid["median_seconds_to_200"] == ""
    assert float(worst["iqm"]) == pytest.approx(290 / 3)
    assert float(worst["success_rate"]) == pytest.approx(1 / 3) and float(worst["hover_rate"]) == pytest.approx(2 / 3)
    assert float(best["ci_low"]) > float(mid["ci_high"])

    printed = capsys.readouterr().out
    assert "batch_size=256,lr=0.0005" in printed and "skipped 1 that did not finish (1 FAILED)" in printed
    assert "Verdict: Best: batch_size=256,lr=0.0005" in printed and "clear of the runner-up defaults" in printed
    markdown = (out / "report.md").read_text()
    assert "| group " in markdown and "**Verdict:** Best: batch_size=256,lr=0.0005" in markdown

    files = ["curves.png", "finals.png", "report.csv", "report.md"]
    for name in files[:2]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f.path for f in client.list_artifacts(parents[sweep])) == files


def test_out_overrides_the_sweep_folder(store, tmp_path):
    _, uri, _, _ = store
    assert run_compare(uri, "--sweep-id", "2026-11-27_05-40-12_ab12", "--out", str(tmp_path / "report")) == 0
    assert (tmp_path / "report" / "report.csv").is_file()


def test_the_default_sweep_is_the_latest_and_runs_without_evaluations_make_a_marked_row(store, capsys):
    _, uri, _, root = store
    assert run_compare(uri) == 0
    (row,) = read_csv(root / "multirun" / "2026-11-27_07-00-00_ef56" / "report.csv")
    assert row["group"] == "defaults" and row["n_seeds"] == "2" and row["note"] == "no evaluations"
    assert row["iqm"] == row["ci_low"] == row["success_rate"] == ""
    assert "No group has an evaluation" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--sweep-id", "no-such-sweep"], "no sweep 'no-such-sweep'"),
        (["--sweep-id", "2026-11-27_06-00-00_cd34"], "has no finished runs (1 FAILED)"),
        (["--experiment", "missing"], "no experiment 'missing'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, capsys, args, expected):
    _, uri, _, _ = store
    assert run_compare(uri, *args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unknown_sweep_lists_known_ones(store, capsys):
    _, uri, _, _ = store
    run_compare(uri, "--sweep-id", "nope")
    assert "2026-11-27_07-00-00_ef56" in capsys.readouterr().err


def test_a_missing_store_is_not_created(tmp_path, capsys):
    assert main(["--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
