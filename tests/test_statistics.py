"""The sweep statistics and the verdict, against values computed here by hand or by brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm, trim_mean

from dqn.report.statistics import (
    LAST_SCORE,
    SeedRun,
    holm,
    improvement_ci,
    iqm,
    iqm_curves,
    permutation_p,
    probability_of_improvement,
    seeds_for_power,
    stats_by_group,
    step_down,
    verdict,
)


def seed_run(group: str, seed: int, evals: list[tuple[int, float, float | None]], truncated: float = 0.0) -> SeedRun:
    """A run scored by its final evaluation, here taken equal to its last in-training one."""
    return SeedRun(group, seed, evals[-1][1] if evals else None, truncated, evals)


def scored(groups: dict[str, list[float]]) -> list[SeedRun]:
    return [SeedRun(group, seed, float(score)) for group, scores in groups.items() for seed, score in enumerate(scores)]


def audit_draw(rng: np.random.Generator, n: int) -> np.ndarray:
    """The audit's final returns: 0.7 N(240, 30) + 0.3 N(100, 60), a solved mode and a stuck one."""
    solved = rng.random(n) < 0.7
    return np.where(solved, rng.normal(240, 30, n), rng.normal(100, 60, n))


# --- per-group statistics ---


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(range(1, 9)) == pytest.approx((3 + 4 + 5 + 6) / 4)
    assert iqm([8, 1, 100, 3, 5, 2, 6, 4]) == pytest.approx((3 + 4 + 5 + 6) / 4)  # order and outliers don't matter
    assert iqm([-50, 180, 210, 250]) == pytest.approx((180 + 210) / 2)


def test_a_seed_that_never_took_off_stalls():
    runs = [
        seed_run("lr=0.001", 0, [(10_000, -300, 30.0), (20_000, -120, 61.0)]),  # never reached 0: stalled
        seed_run("lr=0.001", 1, [(10_000, -300, 31.0), (20_000, 0, 60.0)]),  # reached 0 exactly: took off
        SeedRun("lr=0.001", 2, -80.0, 0.0, ()),  # no evaluation at all: nothing shows it took off
    ]
    (row,) = stats_by_group(runs)
    assert row.stall_rate == pytest.approx(2 / 3)


def test_group_statistics_match_hand_computed_values():
    runs = [  # (env step, eval_return_mean, train_seconds); seed 3 is given out of step order
        seed_run("lr=0.001", 0, [(10_000, 50, 30.0), (20_000, 205, 61.0), (30_000, 250, 95.0)], truncated=0.0),
        seed_run("lr=0.001", 1, [(10_000, 100, 31.0), (20_000, 150, 60.0), (30_000, 180, 92.0)], truncated=0.6),
        seed_run("lr=0.001", 2, [(10_000, 210, 29.0), (20_000, 190, 58.0), (30_000, 210, 90.0)], truncated=0.5),
        SeedRun("lr=0.001", 3, -50.0, 0.9, [(30_000, -50, 99.0), (10_000, 220, 33.0), (20_000, 100, 66.0)]),
    ]
    (row,) = stats_by_group(runs)
    finals = [250, 180, 210, -50]
    mean = sum(finals) / 4
    assert row.group == "lr=0.001" and row.n_seeds == 4 and row.note == ""
    assert row.iqm == pytest.approx((180 + 210) / 2)
    assert row.mean == pytest.approx(mean)
    assert row.std == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in finals) / 3))  # sample std, ddof=1
    assert row.seeds_solved == "2/4"  # 250 and 210: a count of seeds, not a share of episodes
    assert row.hover_rate == pytest.approx(2 / 4)  # 0.6 and 0.9; exactly 0.5 is not hovering
    assert row.stall_rate == 0.0  # every seed had an evaluation >= 0
    assert row.n_reached_200 == 3  # seed 3 reached 200 at 10k and then collapsed
    assert row.median_steps_to_200 == pytest.approx(10_000)  # median of 20k, 10k, 10k
    assert row.median_seconds_to_200 == pytest.approx(33.0)  # median of 61, 29, 33
    assert row.seeds == (-50.0, 180.0, 210.0, 250.0)
    assert row.ci_low is None and row.ci_high is None  # 4 seeds: the CI would be their min and max


def test_the_ci_starts_at_five_seeds_and_holds_the_iqm():
    rows = {row.group: row for row in stats_by_group(scored({"four": [1, 2, 3, 4], "five": [5, 90, 20, 300, 150]}))}
    assert rows["four"].ci_low is None and rows["four"].seeds == (1, 2, 3, 4)
    five = rows["five"]
    assert 5 <= five.ci_low < five.iqm < five.ci_high <= 300
    assert five.iqm == pytest.approx((20 + 90 + 150) / 3)  # 5 seeds: one trimmed from each end


def test_a_score_of_exactly_200_is_solved():
    (row,) = stats_by_group([seed_run("g", 0, [(1, 200.0, 1.0)])])
    assert row.seeds_solved == "1/1" and row.n_reached_200 == 1 and row.median_steps_to_200 == 1


def test_no_seed_reaching_200_leaves_the_medians_empty():
    (row,) = stats_by_group([seed_run("g", s, [(1, 150.0, 1.0)]) for s in range(3)])
    assert row.n_reached_200 == 0 and row.median_steps_to_200 is None and row.median_seconds_to_200 is None


def test_a_single_seed_has_no_spread_and_no_ci():
    runs = [seed_run("a", seed, [(1, 100.0 + seed, 1.0)]) for seed in range(5)] + [seed_run("b", 7, [(1, 42.0, 1.0)])]
    rows = {row.group: row for row in stats_by_group(runs)}
    assert rows["a"].n_seeds == 5 and rows["b"].n_seeds == 1
    b = rows["b"]
    assert b.iqm == b.mean == pytest.approx(42.0) and b.seeds == (42.0,)
    assert b.std is None and b.ci_low is None and b.ci_high is None


def test_seeds_without_a_score_are_not_counted_and_fallback_scores_are_noted():
    runs = [
        SeedRun("a", 0, 210.0, 0.0),
        SeedRun("a", 1, None),  # finished, never evaluated
        SeedRun("a", 2, 150.0, 0.8, scored_by=LAST_SCORE),  # an older run: its last in-training evaluation
    ]
    (row,) = stats_by_group(runs)
    assert row.n_seeds == 2 and row.seeds == (150.0, 210.0) and row.hover_rate == 0.5
    assert row.note == (
        "1 of 3 finished seeds without evaluations, not counted; "
        "1 scored by their last eval_return_mean (no final_eval_return_mean)"
    )


def test_the_ci_is_reproducible():
    runs = [seed_run("a", seed, [(1, float(v), 1.0)]) for seed, v in enumerate([5, 90, 20, 300, 150, 60])]
    assert stats_by_group(runs) == stats_by_group(list(reversed(runs)))


def test_rows_are_sorted_best_first_and_groups_without_evaluations_last():
    runs = [
        seed_run("mid", 0, [(1, 200.0, 1.0)]),
        seed_run("none", 0, []),
        seed_run("top", 0, [(1, 300.0, 1.0)]),
        seed_run("low", 0, [(1, 100.0, 1.0)]),
    ]
    rows = stats_by_group(runs)
    assert [row.group for row in rows] == ["top", "mid", "low", "none"]
    assert rows[-1].n_seeds == 0 and rows[-1].iqm is None and rows[-1].note == "no evaluations"


def test_runs_that_did_not_finish_are_not_seeds_but_are_noted():
    runs = [
        seed_run("a", 0, [(1, 100.0, 1.0)]),
        SeedRun("a", 1, None, status="FAILED"),
        SeedRun("b", 0, None, status="KILLED"),
    ]
    rows = {row.group: row for row in stats_by_group(runs)}
    assert rows["a"].n_seeds == 1 and rows["a"].iqm == 100.0 and rows["a"].note == "skipped 1 FAILED"
    assert rows["b"].n_seeds == 0 and rows["b"].iqm is None and rows["b"].note == "no finished runs; skipped 1 KILLED"


def test_curves_use_the_steps_all_seeds_share_and_a_labelled_band():
    runs = [
        seed_run("a", 0, [(10, 1.0, 1.0), (20, 2.0, 2.0), (30, 3.0, 3.0)]),
        seed_run("a", 1, [(10, 5.0, 1.0), (20, 6.0, 2.0)]),
        seed_run("b", 0, [(10, 7.0, 1.0)]),
        seed_run("c", 0, []),
    ] + [seed_run("d", seed, [(10, float(v), 1.0)]) for seed, v in enumerate([10, 40, 20, 90, 30, 60])]
    curves = iqm_curves(runs)
    assert set(curves) == {"a", "b", "d"}
    np.testing.assert_array_equal(curves["a"].steps, [10, 20])
    np.testing.assert_allclose(curves["a"].iqm, [3.0, 4.0])  # two seeds: nothing trimmed
    np.testing.assert_allclose([curves["a"].low, curves["a"].high], [[1.0, 2.0], [5.0, 6.0]])  # under 5: min, max
    assert curves["a"].n_seeds == 2 and curves["d"].n_seeds == 6
    d = curves["d"]  # 6 seeds: a bootstrap CI, strictly inside the range
    assert 10 < d.low[0] < d.iqm[0] < d.high[0] < 90


# --- the tests behind the verdict ---


def exact_two_sided_p(x: list[float], y: list[float]) -> float:
    """Every way to split the pooled seeds into groups of len(x) and len(y): the share at least as extreme."""
    pooled = np.array(list(x) + list(y), dtype=float)
    chosen = np.array(list(itertools.combinations(range(pooled.size), len(x))))
    mask = np.zeros((len(chosen), pooled.size), dtype=bool)
    mask[np.arange(len(chosen))[:, None], chosen] = True
    first, second = pooled[None, :].repeat(len(chosen), 0)[mask], pooled[None, :].repeat(len(chosen), 0)[~mask]
    null = trim_mean(first.reshape(len(chosen), -1), 0.25, axis=1) - trim_mean(
        second.reshape(len(chosen), -1), 0.25, axis=1
    )
    observed = trim_mean(x, 0.25) - trim_mean(y, 0.25)
    tolerance = 1e-9
    greater, less = np.mean(null >= observed - tolerance), np.mean(null <= observed + tolerance)
    return min(1.0, 2 * min(greater, less))


@pytest.mark.parametrize(
    "x, y",
    [
        ([3, 9, 4, 12, 7], [1, 5, 2, 8]),
        ([240, 250, 255, 260, 230], [198, 200, 202, 150, 120]),
        ([10, 20, 30, 40], [15, 25, 35, 45]),
        ([1, 2, 3], [4, 5, 6, 7, 8]),
    ],
)
def test_permutation_p_is_the_exact_enumeration(x, y):
    assert permutation_p(x, y) == pytest.approx(exact_two_sided_p(x, y), abs=1e-12)


def test_permutation_p_turns_monte_carlo_for_many_seeds_and_stays_close():
    rng = np.random.default_rng(3)
    x, y = list(audit_draw(rng, 9) + 60), list(audit_draw(rng, 9))  # 48,620 splits: more than PERMUTATIONS
    exact = exact_two_sided_p(x, y)
    assert 0.001 < exact < 0.5
    assert permutation_p(x, y) == pytest.approx(exact, abs=0.015)


def test_holm_matches_a_hand_computed_step_down():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1; 0.9 x 1 stays at the running 1
    assert holm([0.02]) == [0.02]


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    x, y = [1, 2, 3, 7], [2, 2, 5]
    # pairs x > y: 3>2 twice, 7 beats all three; ties: 2 = 2 twice, half each -> 5 + 1 = 6 of 12
    assert probability_of_improvement(x, y) == pytest.approx(6 / 12)
    assert probability_of_improvement(x, y) == pytest.approx(mannwhitneyu(x, y).statistic / 12)
    assert probability_of_improvement([5, 6], [1, 2]) == 1.0 and probability_of_improvement([1, 2], [5, 6]) == 0.0
    low, high = improvement_ci([240, 250, 200, 190, 260], [180, 230, 150, 210, 100])
    assert 0 <= low < probability_of_improvement([240, 250, 200, 190, 260], [180, 230, 150, 210, 100]) < high <= 1


def test_seeds_for_power_is_the_normal_approximation():
    x, y = [250, 230, 270, 240, 260], [210, 190, 230, 200, 220]  # IQM 250 vs 210, both sample variances 250
    z = norm.ppf(0.975) + norm.ppf(0.8)
    assert math.ceil(2 * z**2 * 250 / 40**2) == 3  # 2 x 7.85 x 250 / 1600 = 2.45
    assert seeds_for_power(x, y) == 4  # never fewer than the test needs
    wide = [250, 130, 370, 190, 310]  # same IQM, sample variance (2 x 120^2 + 2 x 60^2) / 4 = 9,000
    assert seeds_for_power(wide, y) == math.ceil(2 * z**2 * (4 * 9_000 + 4 * 250) / 8 / 40**2) == 46
    assert seeds_for_power(y, x) is None and seeds_for_power([250], y) is None


# --- the verdict ---


def exact_range_p(groups: list[list[float]]) -> float:
    """Every way to deal the pooled seeds into groups of these sizes (itertools, group after group): the share
    whose IQM range is at least the observed one."""
    pooled, sizes = [float(v) for g in groups for v in g], [len(g) for g in groups]

    def deals(left: tuple[int, ...], sizes: list[int]):
        if not sizes:
            yield []
            return
        for chosen in itertools.combinations(left, sizes[0]):
            rest = tuple(i for i in left if i not in chosen)
            for deal in deals(rest, sizes[1:]):
                yield [chosen, *deal]

    def spread(deal) -> float:
        iqms = [trim_mean([pooled[i] for i in block], 0.25) for block in deal]
        return max(iqms) - min(iqms)

    observed = max(iqm(g) for g in groups) - min(iqm(g) for g in groups)
    null = [spread(deal) for deal in deals(tuple(range(len(pooled))), sizes)]
    return float(np.mean(np.array(null) >= observed - 1e-9))


def test_the_step_down_is_a_range_test_then_the_best_against_the_runner_up():
    groups = {"best": [250, 262, 270], "close": [240, 255, 258], "far": [100, 120, 90]}
    result = verdict(stats_by_group(scored(groups)))
    close, far = result.comparisons
    # step 1: all three alike? (9!/(3!3!3!) = 1,680 splits); step 2: best v close alone (20 splits)
    first = exact_range_p(list(groups.values()))
    second = exact_range_p([groups["best"], groups["close"]])
    assert far.p_value == pytest.approx(first) and close.p_value == pytest.approx(max(first, second))
    assert far.p_value < 0.05 and not close.separated and not result.separated
    assert step_down([groups["best"], groups["far"], groups["close"]]) == pytest.approx([first, max(first, second)])


def test_a_design_that_cannot_show_a_best_config_says_so():
    groups = {"A": [240, 250, 255], "B": [100, 110, 120], "C": [50, 60, 70]}  # as far apart as 3 seeds can be
    result = verdict(stats_by_group(scored(groups)))
    # the last step is 3 v 3 seeds: the observed split and its mirror are 2 of 20 splits, p >= 0.1 whatever the data
    assert result.floor == pytest.approx(exact_range_p([[1, 2, 3], [10, 11, 12]])) == pytest.approx(0.1)
    assert not result.supported and not result.separated
    assert "with 3 seeds and 3 groups no single config can be shown best at p < 0.05" in result.headline
    assert "the smallest p this comparison can reach is 0.100" in result.headline
    assert result.comparisons[0].p_value == pytest.approx(0.1)
    five = verdict(stats_by_group(scored({"A": [240, 250, 255, 260, 245], "B": [150, 160, 170, 155, 165]})))
    assert five.supported and five.floor == pytest.approx(4 / 252) and five.separated


def test_a_clear_difference_is_separated_with_its_effect_size():
    a, b = [240, 250, 255, 260, 245, 251, 230], [198, 200, 202, 150, 190, 201, 180]
    result = verdict(stats_by_group(scored({"A": a, "B": b})))
    (comparison,) = result.comparisons
    assert result.separated and "better than every other group (step-down" in result.headline
    # All of A above all of B, and the same with A's lowest and B's highest swapped (both trimmed, so the IQMs
    # do not change): 2 splits each way of 3,432
    assert comparison.p_value == pytest.approx(4 / math.comb(14, 7))
    assert comparison.improvement == 1.0
    assert comparison.difference == pytest.approx(iqm(a) - iqm(b))
    assert not any(line.startswith("Warning") for line in result.details)
    assert any(line.startswith("Seeds needed:") for line in result.details)


def test_verdict_with_one_group_or_none():
    assert "Only one group" in verdict(stats_by_group(scored({"a": [120, 130]}))).headline
    assert verdict(stats_by_group([SeedRun("empty", 0, None)])).headline == "No group has an evaluation to compare."


@pytest.mark.parametrize(
    "sizes, sweeps",
    [
        ((4, 5), 400),  # a one-sided test of the group that came out ahead would say "better" ~10% of the time
        ((5, 5, 5, 5), 150),  # four groups: the step-down re-chooses the best in every permutation
    ],
)
def test_same_distribution_groups_are_called_different_at_most_5_percent_of_the_time(sizes, sweeps):
    """Any "better than" is false here: the groups are drawn alike, as the audit drew them."""
    rng = np.random.default_rng(2026)
    claims = 0
    for _ in range(sweeps):
        runs = scored({f"g{g}": list(audit_draw(rng, n)) for g, n in enumerate(sizes)})
        claims += any(comparison.separated for comparison in verdict(stats_by_group(runs)).comparisons)
    assert claims / sweeps <= 0.05
