"""The per-key analysis of a sweep (dqn.report.design), against brute-force enumerations and simulated nulls."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binom

from dqn.report.design import analyse, design_of, key_values, main_effects, stratified_p
from dqn.report.statistics import SeedRun, iqm, step_down, step_down_floor


def runs_of(cells: dict[str, list[float]], hovered: dict[str, list[int]] | None = None) -> list[SeedRun]:
    hovered = hovered or {}
    return [
        SeedRun(group, seed, float(score), float(hovered[group][seed]) if group in hovered else 0.0)
        for group, scores in cells.items()
        for seed, score in enumerate(scores)
    ]


def between(blocks: list[list[float]]) -> float:
    """Sum of n (block mean - stratum mean)^2, written out: the statistic the test should be using."""
    pooled = [v for block in blocks for v in block]
    grand = sum(pooled) / len(pooled)
    return sum(len(block) * (sum(block) / len(block) - grand) ** 2 for block in blocks)


def exact_stratified_p(strata: list[tuple[list[float], list[float]]]) -> float:
    """Every relabelling of each stratum's seeds into two blocks of the observed sizes, strata independently."""
    per_stratum = []
    for first, second in strata:
        pooled = first + second
        splits = itertools.combinations(range(len(pooled)), len(first))
        per_stratum.append(
            [
                between([[pooled[i] for i in chosen], [pooled[i] for i in range(len(pooled)) if i not in chosen]])
                for chosen in splits
            ]
        )
    observed = sum(between([first, second]) for first, second in strata)
    null = [sum(combo) for combo in itertools.product(*per_stratum)]
    return sum(value >= observed - 1e-9 for value in null) / len(null)


# A 2 x 2 design with unequal seeds per cell: lr is tested within each batch size
CELLS = {
    "batch_size=64,lr=0.001": [230.0, 250.0, 180.0],
    "batch_size=64,lr=0.0001": [120.0, 200.0],
    "batch_size=256,lr=0.001": [240.0, 90.0],
    "batch_size=256,lr=0.0001": [150.0, 130.0, 100.0],
}


def test_group_names_give_each_seeds_key_values():
    assert key_values("batch_size=64,lr=0.001") == {"batch_size": "64", "lr": "0.001"}
    assert key_values("+network.hidden=[256,256],lr=3e-4") == {"network.hidden": "[256,256]", "lr": "3e-4"}
    assert key_values("defaults") == {}
    design, _ = design_of(runs_of(CELLS))
    assert design.levels == {"batch_size": ["64", "256"], "lr": ["0.0001", "0.001"]}  # numeric order


def test_the_stratified_p_value_is_the_exact_enumeration_on_a_2x2_design():
    design, _ = design_of(runs_of(CELLS))
    lr = stratified_p(design, "lr", design.scores)
    expected = exact_stratified_p(
        [
            (CELLS["batch_size=64,lr=0.0001"], CELLS["batch_size=64,lr=0.001"]),  # C(5, 2) = 10 splits
            (CELLS["batch_size=256,lr=0.0001"], CELLS["batch_size=256,lr=0.001"]),  # 10 more: 100 in all
        ]
    )
    assert lr.exact and lr.arrangements == 100 and lr.p == pytest.approx(expected)
    batch = stratified_p(design, "batch_size", design.scores)
    assert batch.p == pytest.approx(
        exact_stratified_p(
            [
                (CELLS["batch_size=64,lr=0.0001"], CELLS["batch_size=256,lr=0.0001"]),
                (CELLS["batch_size=64,lr=0.001"], CELLS["batch_size=256,lr=0.001"]),
            ]
        )
    )


def test_beyond_the_exact_limit_it_is_monte_carlo_and_close_to_exact():
    rng = np.random.default_rng(7)
    cells = {f"a={a},b={b}": list(rng.normal(100 + 15 * a, 30, 5)) for a in range(2) for b in range(2)}
    design, _ = design_of(runs_of(cells))
    result = stratified_p(design, "a", design.scores)  # 252 x 252 = 63,504 arrangements
    expected = exact_stratified_p([(cells[f"a=0,b={b}"], cells[f"a=1,b={b}"]) for b in range(2)])
    assert not result.exact and result.p == pytest.approx(expected, abs=0.01)
    assert result.p * (1 + result.arrangements) == pytest.approx(round(result.p * (1 + result.arrangements)))


def test_when_no_stratum_holds_two_levels_the_test_is_not_possible():
    # a racing-like sweep: lr=0.001 was only run at batch 64, lr=0.0001 only at batch 256
    cells = {"batch_size=64,lr=0.001": [200.0, 210.0, 220.0], "batch_size=256,lr=0.0001": [100.0, 110.0]}
    analysis = analyse(runs_of(cells))
    lines = analysis.lines()
    assert "batch_size: the stratified test is not possible (no combination of the other keys holds two" in lines[0]
    assert lines[1].startswith("lr: the stratified test is not possible")
    assert analysis.interaction.p is None and "not every combination" in analysis.interaction.note
    one_key = analyse(runs_of({"lr=0.001": [1.0, 2.0], "lr=0.01": [3.0, 4.0]}))
    assert one_key.lines()[0].startswith("lr: cannot be shown to matter at this design")  # 2 v 2: p >= 2/6
    assert analyse(runs_of({"defaults": [1.0], "lr=0.01": [2.0]})).design is None


def test_missing_cells_use_the_strata_that_hold_both_levels():
    cells = dict(CELLS) | {"batch_size=512,lr=0.001": [260.0, 270.0]}  # batch 512 never ran lr=0.0001
    (batch, lr) = main_effects(design_of(runs_of(cells))[0])
    assert lr.strata_used == 2 and lr.strata == 3
    assert batch.strata_used == batch.strata == 2  # each lr holds two batch sizes or more
    assert (batch.best, batch.worst) == ("512", "256")  # level means: 265 (lr=0.001 only), 145.8 (both lrs)
    assert batch.difference == pytest.approx(265 - 165)  # compared where both ran: lr=0.001 alone
    lines = analyse(runs_of(cells)).lines()
    assert any("2 of 3 combinations of the other keys tested" in line for line in lines)


def test_hover_counts_are_tested_as_counts():
    cells = {f"lr={lr},b={b}": [100.0] * 4 for lr in ("0.001", "0.0001") for b in ("1", "2")}
    hovered = {f"lr=0.0001,b={b}": [1, 1, 1, 1] for b in ("1", "2")} | {f"lr=0.001,b={b}": [0] * 4 for b in "12"}
    tests = {t.key: t for t in analyse(runs_of(cells, hovered)).hover}
    # within each b: 4 hovered of 8, all at lr=0.0001: 2 of C(8, 4) = 70 splits as extreme, both strata at once
    assert tests["lr"].p == pytest.approx((2 / 70) ** 2)
    assert tests["lr"].counts == (("0.0001", 8, 8), ("0.001", 0, 8))
    assert tests["b"].p == pytest.approx(1.0)  # within each lr every seed is alike
    # across the 4 configs, one stratum: as extreme only when the 8 hovering seeds fill two configs, C(4, 2) ways,
    # each C(8, 4)^2 = 4,900 arrangements of the seeds, of 16! / (4!)^4 = 63,063,000: exact p 4.7e-4; Monte Carlo
    exact = 6 * 70 * 70 / 63_063_000
    assert tests["config"].p == pytest.approx(exact, abs=6e-4) and tests["config"].p >= 1 / 10_000
    assert tests["config"].counts[0] == ("b=1,lr=0.0001", 4, 4)


def draw(rng: np.random.Generator, n: int) -> np.ndarray:
    """The audit's mixture: 0.7 N(240, 30) + 0.3 N(100, 60)."""
    solved = rng.random(n) < 0.7
    return np.where(solved, rng.normal(240, 30, n), rng.normal(100, 60, n))


def test_under_the_null_a_3x3_grid_claims_a_main_effect_or_a_best_config_at_most_5_percent_of_the_time():
    """Every "matters" and "best" is false here: all 9 configs are drawn alike, 5 seeds each."""
    sims, permutations = 200, 199
    rng = np.random.default_rng(2026)
    main, best = 0, 0
    for _ in range(sims):
        cells = {f"a={a},b={b}": list(draw(rng, 5)) for a in range(3) for b in range(3)}
        main += any(effect.matters for effect in main_effects(design_of(runs_of(cells))[0], permutations))
        ranked = sorted(cells.values(), key=iqm, reverse=True)
        best += max(step_down(ranked, permutations)) < 0.05
    bound = binom.ppf(0.99, sims, 0.05)  # 18 of 200: above it, the rate is over 5% with 99% confidence
    assert main <= bound and best <= bound
    assert step_down_floor((5,) * 9, permutations) < 0.05  # a claim was possible: the test can fail
