"""One-line refusals for what Hydra rejects while it composes a command's config: a value of the wrong type, an
unknown key, an unknown option of a config group, an override that does not parse.

Hydra reports these inside `hydra.main` in several lines and exits 1, where no caller can catch them; so the
command composes its config once itself, first, with Hydra's own loader and the same overrides and mode.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Iterator
from enum import Enum

from hydra import initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from dqn.config import first_line

TYPES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def check_command_line(argv: list[str], config_module: str, config_name: str, schemas: dict[str, type]) -> None:
    """Compose the config `argv` asks for; on a composition error, print one line and exit 2, before any run.
    `schemas` maps a key prefix to the typed schema below it (what a wrong type is told is allowed).

    Commands that do not compose (--help, --hydra-help, --version, shell completion, a rerun) and those that point at
    another config folder are left to Hydra."""
    args, _ = get_args_parser().parse_known_args(argv)
    if (
        args.help
        or args.hydra_help
        or args.shell_completion
        or args.experimental_rerun
        or args.config_path
        or args.config_dir
    ):
        return
    name = args.config_name or config_name
    with initialize_config_module(config_module=config_module, version_base="1.3"):
        # a config may set `hydra.mode: MULTIRUN` itself (sweep=local_optimum): Hydra then runs without -m
        multirun = args.multirun or GlobalHydra.instance().hydra.get_mode(name, args.overrides) == RunMode.MULTIRUN
        compose_or_exit(name, args.overrides, RunMode.MULTIRUN if multirun else RunMode.RUN, schemas)
        for overrides in each_value(args.overrides) if multirun else []:
            compose_or_exit(name, overrides, RunMode.RUN, schemas)


def compose_or_exit(name: str, overrides: list[str], mode: RunMode, schemas: dict[str, type]) -> None:
    try:
        GlobalHydra.instance().hydra.compose_config(name, overrides, mode)
    except HydraException as error:
        print(f"error: {refusal(error, overrides, schemas)}", file=sys.stderr)
        sys.exit(2)


def each_value(overrides: list[str]) -> Iterator[list[str]]:
    """A multirun's overrides with one value of one discrete sweep at a time (a sum, not the product, of the
    sweeps' lengths): Hydra composes each job only when the launcher starts it, after other jobs ran."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    for override in parsed:
        if override.is_discrete_sweep():
            for value in override.sweep_string_iterator():
                yield [*fixed, f"{override.get_key_element()}={value}"]


def refusal(error: HydraException, overrides: list[str], schemas: dict[str, type]) -> str:
    """The line that names the bad key, its value and what is allowed."""
    if isinstance(error, OverrideParseException):
        return f"{error.override!r} is not an override ({first_line(error)}): allowed key=value, Hydra's grammar"
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return f"{group}={option} is not an option of {group}: allowed {', '.join(sorted(error.options))}"
    cause = error.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        return f"{cause.full_key} is not a config key: allowed the keys `python -m dqn.train --help` lists"
    if isinstance(cause, ValidationError) and cause.full_key:
        key = cause.full_key
        allowed = allowed_values(schemas, key) or first_line(cause)
        return f"{key}={given(key, overrides)} is invalid: allowed {allowed}"
    return f"{' '.join(str(error).split())[:400]} (see `python -m dqn.train --help`)"


def given(key: str, overrides: list[str]) -> str:
    """The value the command line gave `key` (the last override of it wins, as in Hydra)."""
    values = [o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == key]
    return values[-1] if values else "?"


def allowed_values(schemas: dict[str, type], key: str) -> str | None:
    """What the typed schema accepts at dotted `key`, in words; None for a key outside them (Hydra's own)."""
    prefix = max((p for p in schemas if key.startswith(p)), key=len, default=None)
    if prefix is None:
        return None
    kind: typing.Any = schemas[prefix]
    for part in key.removeprefix(prefix).split("."):
        hints = typing.get_type_hints(kind) if dataclasses.is_dataclass(kind) else {}
        if part not in hints:
            return None
        kind = hints[part]
    return type_words(kind)


def type_words(kind: typing.Any) -> str:
    args = typing.get_args(kind)
    if type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_words(arg) for arg in inner) + " or null"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return ", ".join(str(member.value) for member in kind)
    origin = typing.get_origin(kind) or kind
    return TYPES.get(origin, getattr(origin, "__name__", str(origin)))
