"""The --help text of the commands, written from the schema itself: every key, its default, its choices and
the docstring under its field, so a key cannot lack a meaning (tests/test_train.py checks)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from enum import Enum
from typing import Any


def as_typed(value: Any) -> str:
    """A default as it is written on the command line: null, true, relu."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return value.value if isinstance(value, Enum) else str(value)


def field_docs(schema: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and of its dataclass bases (Python keeps none for
    attributes, so read the source)."""
    docs = {}
    for base in reversed(schema.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs |= field_docs(base)
    body = ast.parse(inspect.getsource(schema)).body[0].body
    for field_, after in zip(body, body[1:], strict=False):
        documented = isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant)
        if isinstance(field_, ast.AnnAssign) and isinstance(field_.target, ast.Name) and documented:
            docs[field_.target.id] = " ".join(str(after.value.value).split())
    return docs


def describe(schema: type, prefix: str = "") -> list[str]:
    """`key = default  meaning` for every key of `schema`, nested groups flattened: the --help text."""
    lines = []
    hints, docs = typing.get_type_hints(schema), field_docs(schema)
    for item in dataclasses.fields(schema):
        kind = hints[item.name]
        if item.metadata.get("internal"):
            continue
        if dataclasses.is_dataclass(kind):
            lines += describe(kind, f"{prefix}{item.name}.")
            continue
        default = item.default_factory() if item.default is dataclasses.MISSING else item.default
        shown = as_typed(default)
        choices = f" ({' | '.join(m.value for m in kind)})" if isinstance(kind, type) and issubclass(kind, Enum) else ""
        lines.append(
            f"  {prefix}{item.name} = {shown}{choices}" + (f"\n      {docs[item.name]}" if item.name in docs else "")
        )
    return lines
