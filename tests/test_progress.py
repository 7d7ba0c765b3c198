"""Progress on the console: a bar where a terminal can draw one, status lines elsewhere, each shown once."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import struct
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import pytest

from dqn.run.progress import Progress


@contextmanager
def terminal(columns: int) -> Iterator[TextIO]:
    """A real pseudo-terminal that reports `columns` columns, as a writable file."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    try:
        with open(secondary, "w") as file:
            yield file
    finally:
        os.close(main)


@pytest.mark.parametrize("columns, bar", [(0, False), (80, True)])
def test_a_terminal_with_no_width_gets_status_lines_instead_of_a_bar(monkeypatch, caplog, columns, bar):
    with terminal(columns) as stderr:
        monkeypatch.setattr(sys, "stderr", stderr)
        caplog.set_level(logging.INFO, logger="dqn")
        progress = Progress(100, every_seconds=0)
        assert (progress.bar is not None) == bar
        progress.update({"episode_return": -50.0, "epsilon": 0.5}, 40)
        progress.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert lines == ([] if bar else [lines[0]]) and (bar or lines[0].startswith("step 40/100 (40%)"))


def test_the_last_status_line_is_not_printed_twice(caplog):
    caplog.set_level(logging.INFO, logger="dqn")
    progress = Progress(100, every_seconds=0)
    progress.update({"episode_return": 10.0, "epsilon": 0.1}, 100)  # the periodic line falls on the last step
    progress.close()
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 100/100")] != []
    assert sum(r.getMessage().startswith("step 100/100") for r in caplog.records) == 1
