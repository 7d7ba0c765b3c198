"""Stop requests: the first Ctrl-C, SIGTERM or SLURM's SIGUSR2 asks a job to stop at its episode end, checkpointed;
the second stops at once. `Interrupted` is how a stopped job ends, with the line that says how to continue it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dqn.run.commands import resume_command
from dqn.stops import StopRequested

log = logging.getLogger("dqn")


class StopRequest:
    """Whether a signal asked this job to stop, and, under submitit, how to have it requeued afterwards."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.requeue: Callable[[], None] | None = None

    def __call__(self) -> bool:
        return self.event.is_set()


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """The first Ctrl-C or SIGTERM asks training to stop at the end of the current episode,
    checkpointed; a second one stops at once. A handler that was there before (a sequential sweep's)
    hears the first one too.

    Under submitit (a SLURM job), SIGUSR2 is the cluster's preemption or time-limit warning: the job
    stops the same way, and once its run is ended and checkpointed, submitit's own handler is called
    to requeue it; the requeued job continues the same run (`requeued_run`).
    """
    request = StopRequest()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        if request():
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} twice: stopped at once")
        request.event.set()
        log.warning("%s: stopping at the end of this episode (again to stop at once)", signal.Signals(signum).name)
        chained = previous.get(signum)
        if signum == signal.SIGUSR2:
            request.requeue = lambda: chained(signum, None)
        elif callable(chained) and chained is not signal.default_int_handler:
            chained(signum, frame)

    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    signals = [signal.SIGINT, signal.SIGTERM]
    if callable(signal.getsignal(signal.SIGUSR2)):  # submitit's checkpoint-and-requeue handler
        signals.append(signal.SIGUSR2)
    previous.update({s: signal.signal(s, handler) for s in signals})
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Interrupted(StopRequested):
    """A job stopped by a signal, after its run was ended KILLED; says how to continue it."""

    def __init__(
        self, reason: str, run_id: str | None, requeue: Callable[[], None] | None = None, search: bool = False
    ) -> None:
        self.requeue = requeue  # under submitit: have the job requeued (it continues this run)
        if run_id is None:
            how = "stopped"
        elif requeue is not None:
            how = f"run {run_id} is KILLED with its last checkpoint; SLURM requeues the job, which continues it"
        elif search:
            how = f"run {run_id} is KILLED; the search's own command, run again, runs its trial again"
        else:
            how = f"run {run_id} is KILLED with its last checkpoint; continue it with: {resume_command(run_id)}"
        super().__init__(f"{reason or 'interrupted'}: {how}")
