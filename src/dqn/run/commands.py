"""The commands the package prints for people to type, spelled with the interpreter or console script that is
running now, so each works as printed from where the user stands: no activated venv, no repository, no `make`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from dqn.redaction import redact_url
from dqn.tracking.store import default_store, ui_address


def shortest(path: str) -> str:
    """How to type `path`: its bare name when PATH finds this very file (not another `python`), else relative
    to the working folder when under it (`.venv/bin/python`), else absolute."""
    absolute = os.path.abspath(path)
    found = shutil.which(os.path.basename(absolute))
    if found is not None and os.path.abspath(found) == absolute:
        return os.path.basename(absolute)
    relative = os.path.relpath(absolute)
    if relative.startswith(".."):
        return shlex.quote(absolute)
    return shlex.quote(relative if os.sep in relative else f".{os.sep}{relative}")


def command(module: str, script: str) -> str:
    """The command that runs `module`: the console script `script` when this process is one of the package's
    console scripts (`dqn-train` -> its sibling `script`), else `<this interpreter> -m <module>`."""
    running = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if running is not None and running.name.startswith("dqn-") and (running.parent / script).is_file():
        return shortest(str(running.parent / script))
    return f"{shortest(sys.executable)} -m {module}"


def resume_command(run_id: str) -> str:
    """The command that continues run `run_id` from its last checkpoint."""
    return f"{command('dqn.train', 'dqn-train')} resume={run_id}"


def ui_command(uri: str) -> str:
    """The command that serves the MLflow UI on the embedded store `uri` (the store is named unless it is
    the one that command finds by itself from this folder). A password in `uri` is masked: the command then
    works with the password in ~/.pgpass or $PGPASSWORD, and no secret is printed or written."""
    store = "" if uri == default_store(Path.cwd()) else f" --store {shlex.quote(redact_url(uri))}"
    return f"{command('dqn.cli.ui', 'dqn-ui')}{store}"


def view_at(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """`view at <address>`, and for the embedded store the command that serves that address."""
    address = ui_address(uri, experiment_id, run_id)
    if uri.startswith(("http://", "https://")):
        return f"view at {address}"
    return f"view at {address} after `{ui_command(uri)}`"
