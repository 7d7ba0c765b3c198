"""The trained Q-network as an MLflow model of a run: loadable by `mlflow.pytorch` and `mlflow.pyfunc`, optionally
registered in the model registry."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelStatus, Run
from mlflow.models import infer_signature

from dqn.estimator import ActionValueEstimator
from dqn.redaction import redact
from dqn.tracking.store import TrackingUnavailable, check_reachable

log = logging.getLogger("dqn")
MODEL_NAME = "model"
EXAMPLE_BATCH = 5
"""Rows in the input example; above 1 so that the exported graph keeps the batch dimension dynamic."""


def log_model(
    tracking_uri: str, run_id: str, estimator: ActionValueEstimator, registered_name: str | None = None
) -> str:
    """Log `estimator.network` (float32 observations (B, n_inputs) -> Q-values (B, n_actions)) as the model
    "model" of the existing run `run_id`; return a URI that `mlflow.pytorch.load_model` and
    `mlflow.pyfunc.load_model` load while `tracking_uri` is the tracking URI in effect.

    The run's status is left alone, so call it inside the RUNNING run before ending it: no fluent run is
    started, as `mlflow.start_run(run_id=...)` would end the run FINISHED on exit. The logged model is
    created with the client, in the run's experiment and with its params (MLflow's fluent path would file
    it under the `Default` experiment). Saved as "pt2" (`torch.export`: no pickle to run on load) with a
    signature, an input example, and explicit pip requirements so MLflow does not spend seconds inferring them.

    With `registered_name`, a new version of that registered model is created and its URI
    (`models:/<name>/<version>`) returned; otherwise the logged model's `models:/<model_id>`.
    """
    warn_if_away(tracking_uri)
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    logged = pending_model(client, run) or client.create_logged_model(
        run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, params=run.data.params
    )
    network = copy.deepcopy(estimator.network).cpu().eval()
    example = example_observations(estimator.n_inputs)
    with torch.no_grad():
        signature = infer_signature(example, network(torch.as_tensor(example)).numpy())
    with tracking_at(tracking_uri):
        info = mlflow.pytorch.log_model(
            network,
            name=MODEL_NAME,
            model_id=logged.model_id,
            run_id=run_id,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            serialization_format="pt2",
            registered_model_name=registered_name,
        )
    if registered_name is None:
        return info.model_uri
    log.info("registered %s version %s from run %s", registered_name, info.registered_model_version, run_id)
    return f"models:/{registered_name}/{info.registered_model_version}"


def pending_model(client: MlflowClient, run: Run) -> LoggedModel | None:
    """The run's model left PENDING by a process killed while logging it: a resumed run finishes that one
    instead of leaving it beside a second, READY, model."""
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{MODEL_NAME}'"
    )
    return next((model for model in found if model.status == LoggedModelStatus.PENDING), None)


def warn_if_away(tracking_uri: str) -> None:
    """One line when the tracking server does not answer: MLflow's own retries then hold model logging for
    a minute or more without a word."""
    try:
        check_reachable(tracking_uri, timeout=5)
    except TrackingUnavailable:
        log.warning("tracking server %s is away: logging the model waits while MLflow retries", redact(tracking_uri))


def example_observations(n_inputs: int) -> np.ndarray:
    """A fixed float32 batch of observations: the input example, and the trace `torch.export` records."""
    return np.random.default_rng(0).standard_normal((EXAMPLE_BATCH, n_inputs)).astype(np.float32)


def pip_requirements() -> list[str]:
    """What serving the model needs besides MLflow (which MLflow adds itself): the torch that exported it."""
    return [f"torch=={torch.__version__.split('+')[0]}"]


@contextmanager
def tracking_at(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for a moment, then restore the previous URI and $MLFLOW_TRACKING_URI.

    `mlflow.pytorch.log_model` has no tracking URI argument; `mlflow.set_tracking_uri` also rewrites
    (and, reset to None, deletes) the environment variable, which this puts back as it was.
    """
    variable = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    if previous == variable:  # set by the variable alone: restoring the variable restores it
        previous = None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable
