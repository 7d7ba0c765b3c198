from pathlib import Path

import pytest
from mlflow import MlflowClient

from dqn.stops import Pruned, Stopped
from dqn.tracking.recorder import Journal, Recorder, ended, send_journal
from dqn.tracking.store import (
    TrackingUnavailable,
    experiment_name,
    flatten,
    get_or_create_experiment,
    open_experiment,
    redact,
    tracking_uri,
)


def test_flatten_makes_dotted_keys():
    flat = flatten({"lr": 0.1, "env": {"id": "X", "kwargs": {}}, "network": {"hidden_sizes": [4, 4]}})
    assert flat == {"lr": "0.1", "env.id": "X", "env.kwargs": "{}", "network.hidden_sizes": "[4, 4]"}


def test_passwords_in_urls_never_reach_params_or_tags():
    assert flatten({"trial": {"storage": "postgresql://mlflow:s3cret@127.0.0.1:5432/optuna"}}) == {
        "trial.storage": "postgresql://mlflow:***@127.0.0.1:5432/optuna"
    }
    overrides = "lr=0.001 trial.storage='postgresql+psycopg://u:p%40ss@db/optuna' mlflow.tracking_uri=http://h:5000"
    assert (
        redact(overrides)
        == "lr=0.001 trial.storage='postgresql+psycopg://u:***@db/optuna' mlflow.tracking_uri=http://h:5000"
    )
    assert redact("sqlite:////tmp/mlruns/optuna.db") == "sqlite:////tmp/mlruns/optuna.db"
    assert redact("postgresql://u:p@ss@db:5432/optuna") == "postgresql://u:***@db:5432/optuna"  # an @ inside it
    assert redact("http://127.0.0.1:5000/api x=a:b@c") == "http://127.0.0.1:5000/api x=a:b@c"


def test_tracking_uri_precedence(project, monkeypatch):
    assert tracking_uri(None, project) == f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking_uri(None, project) == "http://127.0.0.1:1"
    assert tracking_uri("sqlite:///x.db", project) == "sqlite:///x.db"


def test_experiment_name_precedence(monkeypatch):
    assert experiment_name(None) == "dqn-lunar-lander"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "env-name")
    assert experiment_name(None) == "env-name"
    assert experiment_name("cfg-name") == "cfg-name"


def test_get_or_create_experiment_is_idempotent(store):
    client = MlflowClient(store)
    first = get_or_create_experiment(client, "exp")
    assert get_or_create_experiment(client, "exp") == first


def new_recorder(store: str, folder: Path) -> Recorder:
    client, experiment_id = open_experiment(store, "exp")
    run = client.create_run(experiment_id, run_name="r", tags={"a": "b"})
    return Recorder(client, run.info.run_id, folder, flush_seconds=3600)  # nothing sent until the end


def test_recorder_batches_and_loses_nothing(store, tmp_path):
    with ended(new_recorder(store, tmp_path)) as recorder:
        for step in range(1, 1501):
            recorder.log({"episode_return": float(step), "epsilon": 0.5}, step)
        assert MlflowClient(store).get_metric_history(recorder.run_id, "episode_return") == []
    client = MlflowClient(store)
    history = client.get_metric_history(recorder.run_id, "episode_return")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(1, 1501)]
    run = client.get_run(recorder.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["a"] == "b" and run.info.run_name == "r"


@pytest.mark.parametrize(
    "error, status",
    [(KeyboardInterrupt, "KILLED"), (Stopped, "KILLED"), (Pruned, "KILLED"), (RuntimeError, "FAILED")],
)
def test_run_ends_killed_or_failed_and_keeps_its_metrics(store, tmp_path, error, status):
    recorder = new_recorder(store, tmp_path)
    with pytest.raises(error), ended(recorder):
        recorder.log({"loss": 1.0}, 7)
        raise error("stop")
    client = MlflowClient(store)
    run = client.get_run(recorder.run_id)
    assert run.info.status == status
    assert [(m.step, m.value) for m in client.get_metric_history(recorder.run_id, "loss")] == [(7, 1.0)]
    assert "stop" in run.data.tags["end_reason"]


def test_an_error_after_a_stop_signal_ends_the_run_killed(store, tmp_path):
    """A second Ctrl-C inside a library (the model export) can surface as that library's own error."""
    recorder = new_recorder(store, tmp_path)
    with pytest.raises(RuntimeError), ended(recorder, signalled=lambda: True):
        raise RuntimeError("export interrupted")
    run = MlflowClient(store).get_run(recorder.run_id)
    assert run.info.status == "KILLED" and "export interrupted" in run.data.tags["end_reason"]


def test_a_failed_delivery_keeps_every_metric_on_disk_and_sends_it_later(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries would take minutes
    client, experiment_id = open_experiment(store, "exp")
    run_id = client.create_run(experiment_id).info.run_id
    unreachable = MlflowClient("http://127.0.0.1:9")  # nothing listens: every write fails at once
    recorder = Recorder(unreachable, run_id, tmp_path, flush_seconds=3600)
    for step in range(1, 301):
        recorder.log({"loss": float(step)}, step)
    with pytest.raises(TrackingUnavailable, match="metrics are kept in"):
        recorder.close("FINISHED")
    send_journal(client, run_id, Journal(tmp_path))  # what `resume=` does once the store is back
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(1, 301))
    send_journal(client, run_id, Journal(tmp_path))  # nothing is sent twice
    assert len(client.get_metric_history(run_id, "loss")) == 300


def test_reopened_run_continues_without_duplicates(store, tmp_path):
    recorder = new_recorder(store, tmp_path / "first")
    with pytest.raises(KeyboardInterrupt), ended(recorder):
        for step in (10, 20, 30):
            recorder.log({"loss": float(step)}, step)
        raise KeyboardInterrupt
    MlflowClient(store).update_run(recorder.run_id, status="RUNNING")
    again = Recorder(MlflowClient(store), recorder.run_id, tmp_path / "second")
    again.load_history()
    with ended(again):
        for step in (20, 30, 40):  # a replay from a checkpoint at step 15 re-logs 20 and 30
            again.log({"loss": float(step)}, step)
    history = MlflowClient(store).get_metric_history(recorder.run_id, "loss")
    assert sorted(m.step for m in history) == [10, 20, 30, 40]
    assert again.history["loss"] == [(10, 10.0), (20, 20.0), (30, 30.0), (40, 40.0)]


def test_unreachable_server_is_refused_with_its_address():
    with pytest.raises(TrackingUnavailable, match="127.0.0.1:9"):
        open_experiment("http://127.0.0.1:9", "exp")


def test_disabled_tracking_keeps_history_and_writes_nothing():
    recorder = Recorder(None, None)
    with ended(recorder):
        recorder.log({"loss": 2.0}, 1)
    assert recorder.history["loss"] == [(1, 2.0)]
