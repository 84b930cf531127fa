"""Measured what-ifs: among a folder's configurations, the ones that differ from another in
exactly one knob, and how much faster that knob made it. Pure pandas; backs the bottleneck
verdicts of `attribution` with evidence instead of rules alone."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..spec import SPEC_FIELDS, format_value

# Knobs a user turns to remove a bottleneck; the rest (seed, epochs, data) change the question.
KNOBS = ("loader", "workers", "pin_memory", "amp", "threads", "compile", "batch_size")
IDENTITY = tuple(name for name in SPEC_FIELDS if name not in ("profile", "profile_steps"))


def whatifs(summary: pd.DataFrame, metric: str = "samples_per_s_median") -> dict[str, dict[str, float]]:
    """For each configuration: `--knob value` -> median throughput of the sibling / its own."""
    rows = summary.to_dict("records")
    found: dict[str, dict[str, float]] = {}
    for row in rows:
        mine = row.get(metric, math.nan)
        for other in rows:
            knob = _single_difference(row, other)
            if knob is None or not _positive(mine) or not _positive(other.get(metric)):
                continue
            flag = f"--{knob.replace('_', '-')} {format_value(other[knob])}"
            found.setdefault(row["config"], {})[flag] = float(other[metric]) / float(mine)
    return found


def _single_difference(row: dict[str, Any], other: dict[str, Any]) -> str | None:
    differing = [name for name in IDENTITY if not _same(row.get(name), other.get(name))]
    return differing[0] if len(differing) == 1 and differing[0] in KNOBS else None


def _same(a: Any, b: Any) -> bool:
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or (isinstance(b, float) and math.isnan(b))
    return (a_missing and b_missing) or a == b


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
