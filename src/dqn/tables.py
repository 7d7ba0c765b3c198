"""The tables every command leaves beside its figures: CSV for programs, aligned markdown for people. A leaf
module, so a sweep's report, a search's trials and a race's rounds write theirs one way."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str]) -> Path:
    """`rows` under `columns`, at full precision; None is an empty cell."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return path


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """Cells already formatted, padded to aligned columns so the same text reads well in a terminal."""
    cells = [list(header)] + [[text.replace("|", "\\|") for text in line] for line in lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    rows = [
        "| " + " | ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) + " |" for line in cells
    ]
    rows.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(rows)
