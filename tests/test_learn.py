"""The training loop itself, without Hydra or MLflow: checkpoints, resume, divergence."""

import math
from collections import defaultdict

import gymnasium
import numpy as np
import pytest
import torch

from dqn import learn as learn_module
from dqn import state as state_module
from dqn.config import TrainConfig
from dqn.environment import make_env
from dqn.estimator import ActionValueEstimator
from dqn.learn import EVAL_SEED_OFFSET, FINAL_EVAL_SEED_OFFSET, NonFiniteLoss, learn
from dqn.policy import Episode, evaluate_episodes
from dqn.state import CheckpointMismatch
from dqn.stops import Stopped


def tiny(**changes) -> TrainConfig:
    cfg = TrainConfig(total_steps=2500, learning_starts=300, eval_every=1000, eval_episodes=1, checkpoint_every=0)
    cfg.final_eval_episodes = 2
    cfg.network.hidden_sizes = [32, 32]
    cfg.env.eval_max_episode_steps = 100
    cfg.schedule.decay_steps = 1500
    cfg.buffer.capacity = 1000  # small, so the ring wraps before the interruption
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def recording():
    history = defaultdict(list)
    return history, lambda metrics, step: [history[k].append((step, v)) for k, v in metrics.items()]


def test_stopped_and_resumed_run_logs_what_an_unbroken_run_logs():
    straight, log = recording()
    learn(tiny(), log)

    before, log_before = recording()
    saved = []

    def stop_past_step_1200() -> bool:  # asked at each episode end, right after it is logged
        return before["episode_return"][-1][0] > 1200

    with pytest.raises(Stopped):
        learn(tiny(), log_before, saved.append, stop_requested=stop_past_step_1200)
    (checkpoint,) = saved
    assert checkpoint["step"] == before["episode_return"][-1][0]
    assert checkpoint["step"] > 1000  # the buffer (capacity 1000) has wrapped

    after, log_after = recording()
    learn(tiny(), log_after, resume=checkpoint)
    for key in ("episode_return", "loss", "eval_return_mean", "best_eval_return_mean"):
        assert before[key] + after[key] == straight[key], key


def test_checkpoints_every_n_steps_at_episode_ends_and_at_the_end():
    saved = []
    learn(tiny(checkpoint_every=1000), save=lambda state: saved.append(state["step"]))
    assert saved[-1] == 2500
    assert [s // 1000 for s in saved[:-1]] == [1, 2]  # first episode end at/after each multiple


def test_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    saved = []
    learn(tiny(total_steps=600), save=saved.append)
    torch.save(saved[-1], tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)
    assert loaded["step"] == 600 and 598 <= loaded["buffer"]["size"] <= 600  # n-step: up to n-1 pending


def test_resume_with_another_network_is_refused():
    saved = []
    learn(tiny(total_steps=400), save=saved.append)
    other = tiny()
    other.network.hidden_sizes = [16]
    with pytest.raises(CheckpointMismatch, match=r"network.hidden_sizes=\[32, 32\]"):
        learn(other, resume=saved[-1])


def test_resume_refuses_another_normalisation_and_reads_old_checkpoints_as_unnormalised():
    plain, normalised = tiny(total_steps=400), tiny(total_steps=600)
    plain.network.layer_norm, normalised.network.layer_norm = False, True
    saved = []
    learn(plain, save=saved.append)
    with pytest.raises(CheckpointMismatch, match="network.layer_norm=False"):
        learn(normalised, resume=saved[-1])
    del saved[-1]["shapes"]["network.layer_norm"], saved[-1]["format_version"]  # as written before the option
    with pytest.raises(CheckpointMismatch, match="network.layer_norm=False"):  # not torch's missing-key error
        learn(normalised, resume=saved[-1])
    plain.total_steps = 600
    history, log = recording()
    learn(plain, log, resume=saved[-1])
    assert history["episode_return"] and all(400 < step <= 600 for step, _ in history["episode_return"])


def test_diverging_loss_stops_training_with_the_step():
    with pytest.raises(NonFiniteLoss, match="at step"):
        learn(tiny(lr=1e35, max_grad_norm=None, total_steps=1500))


def test_lr_anneal_reaches_zero_at_the_budget(monkeypatch):
    seen = []
    original = ActionValueEstimator.set_learning_rate

    def spy(self, lr):
        seen.append(lr)
        original(self, lr)

    monkeypatch.setattr(ActionValueEstimator, "set_learning_rate", spy)
    learn(tiny(lr_anneal=True, lr=1e-3, total_steps=1000, eval_episodes=0, train_freq=4))
    assert seen[0] == pytest.approx(1e-3 * (1 - 304 / 1000))  # first update: step 304 (learning_starts 300, freq 4)
    assert seen[-1] == pytest.approx(0.0) and seen == sorted(seen, reverse=True)


def scripted_evaluations(monkeypatch, scores: list[float]) -> list[dict]:
    """Replace the greedy evaluations' scores by `scores` (then 0.0), keeping a copy of the weights
    each evaluation saw: keep_best is then tested on known scores, not on a seed's luck."""
    seen = []

    def evaluate(q, env, n, start_seed):
        seen.append({k: v.clone() for k, v in q.network.state_dict().items()})
        score = scores[len(seen) - 1] if len(seen) <= len(scores) else 0.0
        return [Episode(score=score, length=1, truncated=False, last_reward=0.0) for _ in range(n)]

    monkeypatch.setattr(learn_module, "evaluate_episodes", evaluate)
    return seen


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scores, best", [([10.0, 50.0, 20.0], 1), ([10.0, 20.0, 50.0], 2), ([30.0, 30.0, 5.0], 1)])
def test_keep_best_delivers_the_weights_of_the_best_evaluation(monkeypatch, scores, best):
    seen = scripted_evaluations(monkeypatch, scores + [-1.0])  # evaluations at 1000, 2000, 2500; then the final
    history, log = recording()
    q = learn(tiny(keep_best=True), log)
    assert [mean for _, mean in history["eval_return_mean"]] == scores
    assert history["best_eval_return_mean"][-1][1] == max(scores)
    assert same_weights(q.network.state_dict(), seen[best])  # ties go to the later evaluation
    assert same_weights(seen[-1], seen[best])  # the final evaluation scored the delivered weights
    assert best == 2 or not same_weights(seen[best], seen[2])  # and they are not the last weights


def test_without_keep_best_the_last_weights_are_delivered(monkeypatch):
    seen = scripted_evaluations(monkeypatch, [10.0, 50.0, 20.0, -1.0])
    q = learn(tiny(keep_best=False))
    assert same_weights(q.network.state_dict(), seen[2]) and not same_weights(seen[2], seen[1])


def test_checkpoints_from_before_keep_best_still_resume():
    saved = []
    learn(tiny(total_steps=600), save=saved.append)
    old = {key: value for key, value in saved[-1].items() if key not in ("best", "format_version")}
    history, log = recording()
    learn(tiny(total_steps=1200, eval_every=1200), log, resume=old)
    assert history["best_eval_return_mean"] == history["eval_return_mean"]  # the first evaluation after resume


class ResetSeeds(gymnasium.Wrapper):
    """Records the seed of every reset: the start seeds an env was really given."""

    def __init__(self, env: gymnasium.Env, seeds: list) -> None:
        super().__init__(env)
        self.seeds = seeds

    def reset(self, *, seed=None, options=None):
        self.seeds.append(seed)
        return self.env.reset(seed=seed, options=options)


def test_final_evaluation_starts_are_disjoint_from_every_other_start(monkeypatch):
    made: list[list] = []  # reset seeds per env, in the order learn makes them: training, evaluation

    def recorded_env(*args, **kwargs):
        made.append([])
        return ResetSeeds(make_env(*args, **kwargs), made[-1])

    monkeypatch.setattr(state_module, "make_env", recorded_env)  # the training env
    monkeypatch.setattr(learn_module, "make_env", recorded_env)  # the evaluation env
    cuts = {}  # how many evaluation resets had happened when each kind of evaluation was logged

    def log(metrics, step):
        for key in ("eval_return_mean", "final_eval_return_mean"):
            if key in metrics:
                cuts[key] = len(made[1])

    cfg = tiny(seed=7, eval_episodes=3, final_eval_episodes=4)
    learn(cfg, log)
    training, evaluation = made
    selection, final = evaluation[: cuts["eval_return_mean"]], evaluation[cuts["eval_return_mean"] :]
    assert len(selection) == 3 * 3 and len(final) == 4 == cuts["final_eval_return_mean"] - len(selection)
    assert set(selection) == set(range(7 + EVAL_SEED_OFFSET, 7 + EVAL_SEED_OFFSET + 3))
    assert final == list(range(7 + FINAL_EVAL_SEED_OFFSET, 7 + FINAL_EVAL_SEED_OFFSET + 4))
    assert not set(final) & (set(selection) | set(training))
    # the layout holds for any eval_episodes config.validate allows
    assert FINAL_EVAL_SEED_OFFSET - EVAL_SEED_OFFSET >= learn_module.MAX_EVAL_EPISODES


def test_final_evaluation_scores_the_delivered_weights_and_changes_nothing_before_it():
    without, log = recording()
    learn(tiny(seed=1, eval_every=500, final_eval_episodes=0), log)
    with_final, log = recording()
    cfg = tiny(seed=1, eval_every=500, final_eval_episodes=3)
    q = learn(cfg, log)
    final = {key: values for key, values in with_final.items() if key.startswith("final_eval_")}
    clocks = ("train_seconds", "steps_per_second")  # wall time: never equal twice

    def trained(history):
        return {key: values for key, values in history.items() if key not in final and key not in clocks}

    assert trained(with_final) == trained(without) and len(trained(without)) >= 7
    assert [step for step, _ in with_final["train_seconds"]] == [step for step, _ in without["train_seconds"]]
    assert not any(key.startswith("final_eval_") for key in without)

    env = make_env(cfg.env.id, cfg.env.eval_max_episode_steps)
    episodes = evaluate_episodes(q, env, 3, cfg.seed + FINAL_EVAL_SEED_OFFSET)  # q: the best weights (keep_best)
    scores = np.array([e.score for e in episodes])
    expected = {
        "final_eval_return_mean": scores.mean(),
        "final_eval_return_std": math.sqrt(sum((s - scores.mean()) ** 2 for s in scores) / 2),  # sample std
        "final_eval_success_rate": np.mean(scores >= 200),  # a share of episodes
        "final_eval_truncated_fraction": np.mean([e.truncated for e in episodes]),
        "final_eval_length_mean": np.mean([e.length for e in episodes]),
        "final_eval_episodes": 3,
    }
    assert set(final) == set(expected)
    for key, value in expected.items():
        ((step, logged),) = final[key]
        assert step == cfg.total_steps and logged == pytest.approx(value), key
    # the delivered weights are the best evaluation's, not the last ones (seed 1 falls back, as above)
    assert without["eval_return_mean"][-1][1] < without["best_eval_return_mean"][-1][1]
