"""The benchmark's bookkeeping (its timings are reported, never asserted)."""

import csv

import pytest

from benchmarks.bench import Result, first_solved, our_config, ratio, summarize, write_csv
from dqn.config import ConfigError


def result(system, seed, last, evals, seconds=10.0, rss=100.0, best=None):
    best = last if best is None else best
    return Result(system, seed, 1000, seconds, last, best, *first_solved(evals), rss, evals)


def test_first_solved_is_the_first_evaluation_at_or_above_200():
    assert first_solved([(10, 150.0, 1.0), (20, 200.0, 2.0), (30, 250.0, 3.0)]) == (20, 2.0)
    assert first_solved([(10, 199.9, 1.0)]) == (None, None)


def test_summary_medians_counts_and_peaks_per_system():
    results = [
        result("ours", 0, 250.0, [(10, 210.0, 1.0)], seconds=4.0, rss=120.0),
        result("ours", 1, 150.0, [(10, 100.0, 1.0), (20, 205.0, 3.0)], seconds=5.0, rss=140.0, best=201.0),
        result("ours", 2, 100.0, [(10, 50.0, 1.0)], seconds=10.0),
        result("peer", 0, 210.0, [(10, 220.0, 7.0)], seconds=50.0),
    ]
    ours, peer = summarize(results)
    assert ours["seeds"] == 3 and ours["success_last"] == 1 and ours["reached_200"] == 2
    assert ours["best_means"] == [250, 201, 100] and ours["success_best"] == 2
    assert ours["steps_per_second"] == pytest.approx(1000 / 5.0)  # median of 250, 200, 100
    assert ours["median_steps_to_200"] == 15 and ours["median_seconds_to_200"] == 2.0
    assert ours["last_means"] == [250, 150, 100] and ours["peak_rss_mb"] == 140.0
    assert peer["seeds"] == 1 and peer["median_seconds_to_200"] == 7.0
    assert ratio(ours["steps_per_second"], peer["steps_per_second"]) == "10.00x"
    assert ratio(None, 3.0) == "n/a"


def test_raw_results_are_written_as_csv(tmp_path):
    path = write_csv([result("ours", 0, 250.0, [(10, 210.0, 1.0)])], tmp_path / "bench")
    (row,) = csv.DictReader(path.open())
    assert row["system"] == "ours" and float(row["last_mean"]) == 250.0 and float(row["steps_per_second"]) == 100.0


def test_our_config_takes_typed_dotted_overrides_and_refuses_bad_ones():
    cfg = our_config(["network.hidden_sizes=[64,64]", "tau=0.01"], seed=3)
    assert cfg.network.hidden_sizes == [64, 64] and cfg.tau == 0.01 and cfg.seed == 3 and cfg.batch_size == 128
    with pytest.raises(Exception, match="batch_sise"):
        our_config(["batch_sise=3"])
    with pytest.raises(ConfigError, match="tau=0.0 is invalid"):
        our_config(["tau=0.0"])
