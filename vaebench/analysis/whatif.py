"""Measured what-ifs: among a folder's configurations, the ones that differ from another in
exactly one knob, and how much faster that knob made it. Pure pandas; backs the bottleneck
verdicts of `attribution` with evidence instead of rules alone."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..rules import contended
from ..spec import SPEC_FIELDS, SPEED_KNOBS, RunSpec, format_value
from ..stats import is_missing, number

KNOBS = (*SPEED_KNOBS, "batch_size")  # a sibling differing in one of these is a what-if
# Siblings share everything but the knob, the machine included (a folder filled by several).
IDENTITY = (*(name for name in SPEC_FIELDS if name not in ("profile", "profile_steps")), "machine")


def whatifs(summary: pd.DataFrame, metric: str = "samples_per_s_median") -> dict[str, dict[str, float]]:
    """For each configuration: `--knob value` -> median throughput of the sibling / its own."""
    # A configuration measured beside a busy neighbour is slow for the neighbour's sake: no evidence.
    rows = [row for row in summary.to_dict("records") if not contended(row.get("neighbour_cpu_pct_median"))]
    found: dict[str, dict[str, float]] = {}
    for row in rows:
        mine = row.get(metric, math.nan)
        for other in rows:
            knob = _single_difference(row, other)
            if knob is None or not number(mine) > 0 or not number(other.get(metric)) > 0:
                continue
            # As the spec reads it: pandas holds a missing thread count as NaN, 2 as 2.0.
            flag = f"--{knob.replace('_', '-')} {format_value(getattr(RunSpec.from_dict(other), knob))}"
            found.setdefault(row["config"], {})[flag] = float(other[metric]) / float(mine)
    return found


def _single_difference(row: dict[str, Any], other: dict[str, Any]) -> str | None:
    differing = [name for name in IDENTITY if not (
        (is_missing(row.get(name)) and is_missing(other.get(name))) or row.get(name) == other.get(name))]
    return differing[0] if len(differing) == 1 and differing[0] in KNOBS else None
