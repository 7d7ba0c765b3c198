"""The wiring: a job's run from start to end, sweeps as parent runs, stop signals, printed commands."""
