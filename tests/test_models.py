"""The delivered model in MLflow: a model a kill left PENDING is finished, not doubled; an away server is said."""

import logging

import gymnasium
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from dqn.estimator import ActionValueEstimator
from dqn.tracking import models
from tests.services import free_port


def test_a_model_left_pending_by_a_killed_logging_is_finished_not_doubled(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("models", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    # what a process SIGKILLed inside models.log_model leaves: the logged model created, nothing uploaded
    pending = client.create_logged_model(experiment, name=models.MODEL_NAME, source_run_id=run_id)
    assert pending.status == LoggedModelStatus.PENDING

    estimator = ActionValueEstimator(gymnasium.make("CartPole-v1"), hidden_sizes=[8])
    models.log_model(uri, run_id, estimator)  # the resumed run logs its model again

    (model,) = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    assert model.model_id == pending.model_id and model.status == LoggedModelStatus.READY


def test_a_tracking_server_that_does_not_answer_is_said_in_one_line(caplog):
    port = free_port()  # nothing listens there: connections are refused
    caplog.set_level(logging.WARNING, logger="dqn")
    models.warn_if_away(f"http://user:pw@127.0.0.1:{port}")
    (line,) = [record.getMessage() for record in caplog.records]
    assert f"tracking server http://user:***@127.0.0.1:{port} is away" in line and "pw" not in line
    caplog.clear()
    models.warn_if_away("sqlite:///unused.db")  # a local store is never away
    assert not caplog.records
