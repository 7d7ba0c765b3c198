"""Requested ends of a job: a signal's stop, a pruned search trial, the job's end after either.

They unwind training like exceptions but are not failures: `dqn.tracking.recorder.ended` ends the run
KILLED with the reason, and the job returns instead of failing. They are not KeyboardInterrupts, so
an `except KeyboardInterrupt` meant for a second Ctrl-C never catches them, and the order of except
clauses does not decide which is which.
"""


class StopRequested(Exception):
    """Training was asked to end before its budget: not a failure of the job."""


class Stopped(StopRequested):
    """Training stopped on request (a signal, a stopping sweep) at an episode end, after a checkpoint."""


class Pruned(StopRequested):
    """The job's search trial was pruned: training stops at this evaluation; the run is tagged `pruned`."""
