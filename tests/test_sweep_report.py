"""`python -m dqn.cli.compare` on a real MLflow store (the statistics themselves: tests/test_statistics.py)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from dqn.cli.compare import main
from dqn.report.figures import short
from dqn.report.sweep_report import counted

# --- the command, on a real store ---

EXPERIMENT = "dqn-lunar-lander"
STEPS = (10_000, 20_000, 30_000)
# group -> per seed: eval_return_mean at STEPS, the scoring evaluation's truncated fraction, and the run's
# final_eval_return_mean (None: a run from before the final evaluation, scored by its last eval_return_mean).
# train_seconds = step / 1000 * (1 + seed).
SWEEP = {
    "batch_size=256,lr=0.0005": [
        ([120, 210, 260], 0.0, 250.0),
        ([150, 190, 240], 0.0, 240.0),
        ([205, 230, 250], 0.0, 260.0),
        ([100, 150, 180], 0.0, 245.0),
        ([90, 140, 170], 0.0, 255.0),
    ],
    "defaults": [
        ([0, 100, 150], 0.8, 150.0),
        ([10, 110, 160], 0.0, 160.0),
        ([20, 120, 170], 0.6, 170.0),
        ([30, 130, 180], 0.0, 155.0),
        ([40, 140, 190], 0.0, 165.0),
    ],
    "lr=0.001": [([-100, 50, 100], 0.8, None), ([0, 150, 210], 0.0, None), ([-200, -50, -20], 0.6, None)],
}

# A 2 x 2 grid, 3 seeds a cell: (final_eval_return_mean, final_eval_truncated_fraction) per seed. Within each
# batch size every lr=0.001 seed beats every lr=0.0001 seed; batch size is mixed within each lr.
GRID = {
    "batch_size=64,lr=0.0001": [(100.0, 0.9), (120.0, 0.0), (140.0, 0.0)],
    "batch_size=64,lr=0.001": [(200.0, 0.0), (230.0, 0.0), (260.0, 0.0)],
    "batch_size=256,lr=0.0001": [(110.0, 0.8), (150.0, 0.0), (130.0, 0.0)],
    "batch_size=256,lr=0.001": [(220.0, 0.0), (250.0, 0.0), (240.0, 0.0)],
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


def evaluations(returns: list[float], truncated: float, final: float | None, seed: int) -> list[tuple[str, float, int]]:
    """What a run logs: its evaluations during training, then (newer runs) the final evaluation."""
    metrics = []
    for i, (step, value) in enumerate(zip(STEPS, returns, strict=True)):
        metrics += [
            ("eval_return_mean", float(value), step),
            ("eval_return_std", 10.0, step),
            ("eval_truncated_fraction", truncated if final is None and i == len(STEPS) - 1 else 0.0, step),
            ("train_seconds", step / 1000 * (1 + seed), step),
            ("eval_length_mean", 300.0, step),
            ("episode_return", -500.0, step - 1),
        ]
    if final is not None:
        metrics += [
            ("final_eval_return_mean", final, STEPS[-1]),
            ("final_eval_truncated_fraction", truncated, STEPS[-1]),
            ("final_eval_episodes", 50.0, STEPS[-1]),
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
        for seed, (returns, truncated, final) in enumerate(seeds):
            metrics = evaluations(returns, truncated, final, seed)
            add_job(client, experiment_id, parents[sweep], sweep, group, seed, metrics, 1001)
    add_job(client, experiment_id, parents[sweep], sweep, "batch_size=256,lr=0.0005", 5, [], 1002, status="FAILED")
    add_job(client, experiment_id, parents[sweep], sweep, "defaults", 5, [("episode_return", -90.0, 40)], 1002)

    failed = "2026-11-27_06-00-00_cd34"
    parents[failed] = add_sweep(client, experiment_id, root, failed, 2000)
    add_job(client, experiment_id, parents[failed], failed, "defaults", 0, [], 2001, status="FAILED")

    grid = "2026-11-26_09-00-00_9a1d"  # started first: the default sweep stays the latest
    parents[grid] = add_sweep(client, experiment_id, root, grid, 500)
    for group, seeds in GRID.items():
        for seed, (final, truncated) in enumerate(seeds):
            metrics = evaluations([final - 50, final - 20, final], truncated, final, seed)
            add_job(client, experiment_id, parents[grid], grid, group, seed, metrics, 501)

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
    best, mid, old = rows
    assert best["n_seeds"] == "5" and best["note"] == "skipped 1 FAILED"  # the FAILED job is not a seed
    assert float(best["iqm"]) == pytest.approx(250.0)  # scored by final_eval_return_mean: middle 245, 250, 255
    assert [float(v) for v in best["seeds"].split()] == [240.0, 245.0, 250.0, 255.0, 260.0]
    assert 240 <= float(best["ci_low"]) < 250 < float(best["ci_high"]) <= 260  # 5 seeds: a CI
    assert best["seeds_solved"] == "5/5" and float(best["hover_rate"]) == 0.0
    assert float(best["std"]) == pytest.approx(math.sqrt(250 / 4))  # sample std: squares 100+25+0+25+100, n - 1 = 4
    assert float(best["median_steps_to_200"]) == 20_000  # first evaluation >= 200: 20k, 30k, 10k; two never
    assert best["n_reached_200"] == "3"
    assert float(best["median_seconds_to_200"]) == pytest.approx(30.0)  # 20 (seed 0), 60 (seed 1), 30 (seed 2)

    assert mid["n_seeds"] == "5" and mid["note"] == "1 of 6 finished seeds without evaluations, not counted"
    assert float(mid["iqm"]) == pytest.approx(160.0) and mid["seeds_solved"] == "0/5"
    assert float(mid["hover_rate"]) == pytest.approx(2 / 5)  # final_eval_truncated_fraction 0.8 and 0.6
    assert mid["n_reached_200"] == "0" and mid["median_steps_to_200"] == "" and mid["median_seconds_to_200"] == ""

    assert old["n_seeds"] == "3" and old["ci_low"] == "" and old["ci_high"] == ""  # under 5 seeds: no CI
    assert float(old["iqm"]) == pytest.approx(290 / 3)  # their last eval_return_mean: 100, 210, -20
    assert old["seeds_solved"] == "1/3" and float(old["hover_rate"]) == pytest.approx(2 / 3)
    assert old["note"] == "3 scored by their last eval_return_mean (no final_eval_return_mean)"

    printed = capsys.readouterr().out
    assert "batch_size=256,lr=0.0005" in printed and "skipped 1 that did not finish (1 FAILED)" in printed
    assert "14 finished runs (1 without a score) in 3 groups" in printed
    assert "Verdict: Best by IQM: batch_size=256,lr=0.0005" in printed
    assert "better than every other group (step-down permutation test" in printed
    # the last step is best v defaults alone: 5 v 5 seeds all apart, 4 of 252 splits (IQM ties) as extreme
    assert "vs defaults (IQM 160.0, 5 seeds; difference 90.0): better, p = 0.016" in printed
    assert "vs lr=0.001 (IQM 96.7, 3 seeds; difference 153.3): better, p = 0.0" in printed  # the first step's p
    assert "Per-key analysis: the groups do not all set the same keys" in printed  # `defaults` names no key
    markdown = (out / "report.md").read_text()
    assert "| group " in markdown and "- Verdict: Best by IQM: batch_size=256,lr=0.0005" in markdown
    assert "Score of a seed: final_eval_return_mean" in markdown
    assert "3 of 13 seeds come from runs without it and are scored by their last eval_return_mean" in markdown
    table = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
    assert "| 100.0, 210.0, -20.0 " not in table["lr=0.001"] and "| -20.0, 100.0, 210.0 " in table["lr=0.001"]
    assert "240.0" not in table["batch_size=256,lr=0.0005"].split("|")[6]  # 5 seeds: the CI, not the list
    assert "- Warning: fewer than 5 seeds in lr=0.001 (3)" in markdown

    files = ["curves.png", "finals.png", "report.csv", "report.html", "report.md"]
    for name in files[:2]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(f.path for f in client.list_artifacts(parents[sweep])) == files


def test_a_grid_sweep_answers_per_key_at_the_top_with_a_heatmap(store, capsys):
    client, uri, parents, root = store
    grid = "2026-11-26_09-00-00_9a1d"
    assert run_compare(uri, "--sweep-id", grid) == 0
    out = root / "multirun" / grid
    # lr: each batch size's 6 seeds split 3/3 in C(6, 3) = 20 ways, 400 in all; only the observed split (and its
    # mirror) in both strata reaches the observed sum of squares: p = 4/400, Holm over 2 keys doubles it.
    # Difference: mean over batch sizes of the cell means, (230 - 120 + 236.67 - 130) / 2 = 108.3
    lines = (out / "report.md").read_text().splitlines()
    assert lines[2].startswith("- lr: matters, p = 0.020, Holm over 2 keys; 0.001 best, +108 over 0.0001 [95% CI +")
    assert lines[3].startswith("- batch_size: no effect detected at this design, p = ")
    assert lines[4].startswith("- batch_size x lr interaction: none detected, p = ")
    assert "- hovering by lr: 0.0001 2/6, 0.001 0/6 seeds hovered; no difference detected" in lines[6]
    assert lines[7].startswith("- hovering by config: batch_size=256,lr=0.0001 1/3, ")
    # 3 v 3 seeds: the step-down's last step floors at 2/20; the main effects' floor is 4/400
    verdict = lines[8]
    assert verdict.startswith("- Verdict: Best by IQM: batch_size=256,lr=0.001") and (
        "with 3 seeds and 4 groups no single config can be shown best at p < 0.05: the smallest p this comparison "
        "can reach is 0.100" in verdict
    )
    assert verdict.endswith("The main effects can (smallest p, unadjusted: batch_size 0.010, lr 0.010).")
    assert lines[10] == "![heatmap.png](heatmap.png)" and lines[12] == "![sensitivity.png](sensitivity.png)"
    low, high = (float(v) for v in lines[2].split("[95% CI ")[1].split("]")[0].split(", "))
    assert 80 < low < 108.3 < high < 140  # resampled within cells: never wider than the cells' ranges allow
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].startswith("lr: matters, p = 0.020")
    html = (out / "report.html").read_text()
    assert html.index("lr: matters") < html.index("heatmap.png") < html.index("<table>")
    run = client.get_run(parents[grid])
    assert run.data.tags["mlflow.note.content"].startswith("- lr: matters, p = 0.020")
    assert run.data.metrics["effect_p.lr"] == pytest.approx(0.02)
    assert run.data.metrics["effect_size.lr"] == pytest.approx((230 - 120 + 710 / 3 - 130) / 2)
    assert run.data.metrics["effect_p.batch_size"] > 0.05 and "hover_p.lr" in run.data.metrics
    assert {"heatmap.png", "sensitivity.png"} <= {f.path for f in client.list_artifacts(parents[grid])}
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_out_overrides_the_sweep_folder(store, tmp_path):
    _, uri, _, _ = store
    assert run_compare(uri, "--sweep-id", "2026-11-27_05-40-12_ab12", "--out", str(tmp_path / "report")) == 0
    assert (tmp_path / "report" / "report.csv").is_file()


def test_the_default_sweep_is_the_latest_and_runs_without_evaluations_make_a_marked_row(store, capsys):
    _, uri, _, root = store
    assert run_compare(uri) == 0
    (row,) = read_csv(root / "multirun" / "2026-11-27_07-00-00_ef56" / "report.csv")
    assert row["group"] == "defaults" and row["n_seeds"] == "0" and row["note"] == "no evaluations"
    assert row["iqm"] == row["ci_low"] == row["seeds_solved"] == row["seeds"] == ""
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


@pytest.mark.parametrize(
    "group, shown",
    [
        ("batch_size=256,lr=0.00010206062134502272,gamma=0.99", "batch_size=256,lr=0.0001021,gamma=0.99"),
        ("lr=1.2345678e-05", "lr=1.235e-05"),
        ("batch_size=64,lr=0.001", "batch_size=64,lr=0.001"),  # a grid's values stay as written
        ("env.id=LunarLander-v3", "env.id=LunarLander-v3"),
    ],
)
def test_figure_legends_shorten_a_searchs_long_sampled_numbers(group, shown):
    assert short(group) == shown


def test_counts_read_in_the_singular_and_the_plural():
    assert counted(1, "group") == "1 group" and counted(3, "finished run") == "3 finished runs"
