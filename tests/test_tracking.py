import pytest
from mlflow import MlflowClient

from dqn import tracking


def test_flatten_makes_dotted_keys():
    flat = tracking.flatten({"lr": 0.1, "env": {"id": "X", "kwargs": {}}, "network": {"hidden_sizes": [4, 4]}})
    assert flat == {"lr": "0.1", "env.id": "X", "env.kwargs": "{}", "network.hidden_sizes": "[4, 4]"}


def test_tracking_uri_precedence(project, monkeypatch):
    assert tracking.tracking_uri(None, project) == f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    assert (project / "mlruns").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri(None, project) == "http://127.0.0.1:1"
    assert tracking.tracking_uri("sqlite:///x.db", project) == "sqlite:///x.db"


def test_experiment_name_precedence(monkeypatch):
    assert tracking.experiment_name(None) == "dqn-lunar-lander"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "env-name")
    assert tracking.experiment_name(None) == "env-name"
    assert tracking.experiment_name("cfg-name") == "cfg-name"


def test_get_or_create_experiment_is_idempotent(store):
    client = MlflowClient(store)
    first = tracking.get_or_create_experiment(client, "exp")
    assert tracking.get_or_create_experiment(client, "exp") == first


def test_recorder_batches_and_loses_nothing(store):
    with tracking.tracked_run(store, "exp", "r", {"a": "b"}) as recorder:
        recorder.flush_seconds = 3600  # nothing is written until the end
        for step in range(1, 1501):
            recorder.log({"episode_return": float(step), "epsilon": 0.5}, step)
        run_id = recorder.run_id
        assert MlflowClient(store).get_metric_history(run_id, "episode_return") == []
    client = MlflowClient(store)
    history = client.get_metric_history(run_id, "episode_return")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(1, 1501)]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["a"] == "b" and run.info.run_name == "r"


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED")])
def test_run_ends_killed_or_failed_and_keeps_its_metrics(store, error, status):
    with pytest.raises(error), tracking.tracked_run(store, "exp", "r", {}) as recorder:
        recorder.flush_seconds = 3600
        recorder.log({"loss": 1.0}, 7)
        run_id = recorder.run_id
        raise error("stop")
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == status
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(7, 1.0)]
    assert run.data.tags["end_reason"]


def test_disabled_tracking_keeps_history_and_writes_nothing(project):
    with tracking.tracked_run("sqlite:///nowhere/x.db", "exp", "r", {}, enabled=False) as recorder:
        recorder.log({"loss": 2.0}, 1)
    assert recorder.history["loss"] == [(1, 2.0)]
    assert not (project / "nowhere").exists()
