"""Passwords kept out of what the project writes (MLflow params, tags and descriptions, log lines, run folders):
each URL's password is found by parsing the URL as SQLAlchemy does, so `/ : # ?` in it and percent-encoding
(`%40` for `@`) are read as the database driver reads them, not guessed by a pattern."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
URL_START = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://")
URL_END = re.compile(r"[\s'\"]")  # a URL written in text or YAML ends at a space or a quote


def redact_url(url: str) -> str:
    """`url` with its password replaced by ***; unchanged when it has none or is not a URL.

    SQLAlchemy's grammar serves http(s) too: the password runs from the user's `:` to the next `@`."""
    try:
        parsed = make_url(url)
        while parsed.password and parsed.host and "@" in parsed.host:  # an `@` left raw inside the password
            url = url.replace("@", "%40", 1)  # belongs to it: the host follows the last `@`
            parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    if not parsed.password:
        return url
    return parsed.render_as_string(hide_password=True)


def redact(text: str) -> str:
    """`text` with the password of every URL in it masked: `postgresql://user:***@host/db`."""
    parts, position = [], 0
    for start in URL_START.finditer(text):
        if start.start() < position:
            continue
        end = URL_END.search(text, start.end())
        stop = end.start() if end else len(text)
        parts += [text[position : start.start()], redact_url(text[start.start() : stop])]
        position = stop
    return "".join(parts) + text[position:]


def redact_file(path: Path) -> None:
    """Rewrite `path` with its URLs' passwords masked (atomically: parallel jobs may rewrite one file)."""
    text = path.read_text()
    masked = redact(text)
    if masked != text:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(masked)
        temporary.replace(path)


def redact_logs() -> None:
    """Mask passwords in every log record made from now on in this process, ours and the libraries' (Hydra's
    launcher lists each job's overrides): when the record is made, so whatever handlers a later logging setup
    installs (Hydra's, once per job) write it masked. Tracebacks are formatted later and not covered."""
    make = logging.getLogRecordFactory()
    if getattr(make, "redacting", False):
        return

    def redacting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad format arguments: logging reports them when it writes the record
            return record
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    redacting.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting)


def restore(saved: str, current: str | None) -> str:
    """`saved` (a value written masked), or `current` when it is the same URL with its password: what a
    resumed job, which reads its masked config.yaml, takes from its own command."""
    return current if isinstance(current, str) and current != saved and redact(current) == saved else saved
