"""Run names that read in the UI's narrow Run Name column: the seed first, then the job's config short."""

from __future__ import annotations

import math


def run_name(overrides: list[str], seed: int) -> str:
    """Readable in the UI's narrow Run Name column, which cuts the end: the seed first, then the job's config
    short, e.g. `s3 bs256 lr5e-4` for `seed=3 batch_size=256 lr=0.0005`. The full values are the run's params
    and its `group` tag."""
    return " ".join([f"s{seed}", *map(short_override, overrides)])[:250]


def short_override(override: str) -> str:
    """`batch_size=256` -> `bs256`, `lr=0.00010206062134502272` -> `lr1.02e-4`, `network=mlp_small` ->
    `network=mlp_small`: a key of several words by its initials, numbers to 3 significant digits."""
    key, _, value = override.lstrip("+").partition("=")
    words = key.rsplit(".", 1)[-1].split("_")
    short = "".join(w[0] for w in words if w) if len(words) > 1 else words[0]
    try:
        number = float(value)
    except ValueError:
        return f"{short}={value}"
    return f"{short}{significant(number)}"


def significant(number: float, digits: int = 3) -> str:
    """`number` to `digits` significant digits, compact: 128 -> `128`, 0.99 -> `0.99`, 0.0005 -> `5e-4`."""
    if number.is_integer() and abs(number) < 1e5:
        return str(int(number))
    if math.isfinite(number) and number != 0 and not 1e-2 <= abs(number) < 1e5:
        mantissa, exponent = f"{number:.{digits - 1}e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{number:.{digits}g}"
