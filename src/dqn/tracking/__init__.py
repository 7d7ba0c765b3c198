"""The MLflow side: the store, recording a run, sweeps as parent runs, models."""
