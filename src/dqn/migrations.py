"""The one place that reads files older versions wrote: one function per kind of file, each with its
own format version. A leaf module (it imports nothing of ours), so every reader can use it."""

from __future__ import annotations

import math
from typing import Any

CHECKPOINT_VERSION = 2
"""Training checkpoints. 1: no version key (before network.layer_norm and keep_best); 2: today's."""
WEIGHTS_VERSION = 2
"""Weights files (`save_weights`). 1: no version key (before the dueling head and LayerNorm); 2: today's."""


def migrate_checkpoint(saved: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint in today's form: runs from before `network.layer_norm` trained without
    it, and checkpoints from before `keep_best` hold no best weights."""
    saved = dict(saved)
    if "rng" in saved and saved.get("format_version", 1) < CHECKPOINT_VERSION:  # not a checkpoint: left to check
        saved["shapes"] = {"network.layer_norm": False} | saved.get("shapes", {})
        saved.setdefault("best", {"score": -math.inf, "q": None})
        saved["format_version"] = CHECKPOINT_VERSION
    return saved


def migrate_weights(saved: dict[str, Any]) -> dict[str, Any]:
    """A weights file in today's form: weights from before the dueling head and LayerNorm have neither."""
    if saved.get("format_version", 1) >= WEIGHTS_VERSION:
        return dict(saved)
    return {"dueling": False, "layer_norm": False} | saved | {"format_version": WEIGHTS_VERSION}


def migrate_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's config.yaml in today's form: keys it lacks get the meaning they had before they existed."""
    saved = dict(saved)
    saved["network"] = {"layer_norm": False} | dict(saved.get("network") or {})
    return saved
