"""The ablation's variants and its exact test (its runs are measured, never asserted)."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from benchmarks.ablation import VARIANTS, command, experiment_name, fisher_p, parse, table
from dqn.config import TrainConfig
from dqn.report.statistics import SeedRun
from tests.conftest import compose_config

BUDGET = ["total_steps=20000", "seed=0"]


def differences(a: TrainConfig, b: TrainConfig, prefix: str = "") -> dict[str, tuple]:
    """Dotted keys whose values differ between two configs."""
    found = {}
    for item in dataclasses.fields(a):
        x, y = getattr(a, item.name), getattr(b, item.name)
        if dataclasses.is_dataclass(x):
            found |= differences(x, y, f"{prefix}{item.name}.")
        elif x != y:
            found[f"{prefix}{item.name}"] = (x, y)
    return found


def composed(tmp_path, overrides: list[str]) -> TrainConfig:
    return OmegaConf.to_object(compose_config(overrides + BUDGET, tmp_path / "out"))


@pytest.mark.parametrize(
    "variant, changed",
    [
        ("+ target network", {"target_update_interval": (1, 250)}),
        ("+ Double DQN (and target network)", {"target_update_interval": (1, 250), "double_q": (False, True)}),
        ("+ 3-step targets", {"n_step": (1, 3)}),
        ("+ LayerNorm", {"network.layer_norm": (False, True)}),
        ("+ keep_best", {"keep_best": (False, True)}),
    ],
)
def test_each_variant_is_the_exercise_agent_plus_its_addition_only(tmp_path, variant, changed):
    exercise = composed(tmp_path, VARIANTS["exercise"])
    assert differences(exercise, composed(tmp_path, VARIANTS[variant])) == changed


def test_the_default_variant_is_the_shipped_default_at_the_ablation_budget(tmp_path):
    assert composed(tmp_path, VARIANTS["today's default"]) == TrainConfig(total_steps=20_000)


def test_commands_run_every_variant_on_the_same_seeds_and_budget_in_its_own_experiment():
    args = parse(["--steps", "12345", "--seeds", "3", "--first-seed", "7", "--jobs", "4"])
    commands = [command(variant, args) for variant in args.variants]
    shared = ["total_steps=12345", "seed=range(7,10)", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4"]
    assert all(set(shared) <= set(c) and c[1:4] == ["-m", "dqn.train", "-m"] for c in commands)
    names = {experiment_name(variant) for variant in args.variants}
    assert len(names) == len(VARIANTS) and "ablation-exercise" in names


def test_the_exercise_must_be_among_the_variants():
    with pytest.raises(SystemExit):
        parse(["--variants", "+ LayerNorm"])


def test_fisher_p_of_three_of_three_against_none_of_three():
    # six seeds, three yes: the observed split and its mirror are the two most extreme of C(6, 3) = 20
    # equally likely ones, so the two-sided p is 2/20; equal counts give p = 1
    assert fisher_p(3, 3, 0, 3) == pytest.approx(0.1)
    assert fisher_p(1, 3, 1, 3) == pytest.approx(1.0)


def test_table_counts_hovering_and_stalled_seeds_and_tests_them_against_the_exercise():
    exercise = [
        SeedRun("exercise", 0, -24.0, 1.0, [(5000, -18.0, 1.0)]),  # hovers (all cut) and never reached 0
        SeedRun("exercise", 1, 204.0, 0.02, [(5000, 210.0, 1.0)]),  # lands; reached 200 at 5k
        SeedRun("exercise", 2, 66.0, 0.54, [(5000, 108.0, 1.0)]),  # hovers (54% cut) after taking off
    ]
    crashing = [SeedRun("x", seed, -80.0, 0.0, [(5000, -30.0, 1.0)]) for seed in range(3)]
    lines = table({"exercise": exercise, "+ x": crashing}, {"exercise": 12.0}).splitlines()
    cells = [cell.strip() for cell in lines[3].split("|")[1:-1]]
    # hovering 0/3 against 2/3, stalled 3/3 against 1/3: of the C(6, 2) = 15 ways to place the two
    # (or four) yes-seeds, 3 give the observed split and 3 its mirror, so p = 6/15 either way
    assert cells[:10] == ["+ x", "3", "-80", "-80", "0/3", "0/3", "0.40", "3/3", "0.40", "0/3"]
    assert lines[2].split("|")[5:10] == [" 1/3 ", " 2/3 ", " - ", " 1/3 ", " - "]
    assert "5,000" in lines[2] and lines[2].rstrip("| ").endswith("12")
