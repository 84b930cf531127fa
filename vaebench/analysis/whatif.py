"""Measured what-ifs: among a folder's configurations, the ones that differ from another in
exactly one knob, and how much faster that knob made it. Pure pandas; backs the bottleneck
verdicts of `attribution` with evidence instead of rules alone."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..rules import ALPHA, contended
from ..spec import SPEC_FIELDS, SPEED_KNOBS, RunSpec, format_value
from ..stats import is_missing, mann_whitney, number

KNOBS = (*SPEED_KNOBS, "batch_size")  # a sibling differing in one of these is a what-if
# Siblings share everything but the knob, the machine included (a folder filled by several).
IDENTITY = (*(name for name in SPEC_FIELDS if name not in ("profile", "profile_steps")), "machine")
_MISSING = object()  # None and NaN alike: two missing values are the same value


def whatifs(summary: pd.DataFrame, metric: str = "samples_per_s_median",
            runs: Mapping[str, Sequence[float]] | None = None) -> dict[str, dict[str, float]]:
    """For each configuration: `--knob value` -> median throughput of the sibling / its own;
    given each configuration's `runs` (values of the metric), only siblings whose runs differ from
    its own beyond chance (one-sided Mann-Whitney at ALPHA, as compare tests): a median of one run
    against one is no evidence, and three runs a side are the fewest that can show a difference.

    Siblings are found by grouping the configurations on all identity fields but one knob, per
    knob, rather than by comparing every configuration with every other: a folder of 1,000 took
    ten seconds that way. The result, and its order, is that of the pairwise comparison."""
    # A configuration measured beside a busy neighbour is slow for the neighbour's sake: no evidence.
    rows = [row for row in summary.to_dict("records") if not contended(row.get("neighbour_cpu_pct_median"))]
    siblings = _siblings(rows)
    specs: dict[int, RunSpec] = {}
    found: dict[str, dict[str, float]] = {}
    for mine, row in enumerate(rows):
        own = row.get(metric, math.nan)
        for other, knob in sorted(siblings[mine]):
            if not number(own) > 0 or not number(rows[other].get(metric)) > 0:
                continue
            if runs is not None and not _beyond_chance(runs, row["config"], rows[other]["config"]):
                continue
            if other not in specs:
                specs[other] = RunSpec.from_dict(rows[other])
            spec = specs[other]
            # As the spec reads it: pandas holds a missing thread count as NaN, 2 as 2.0.
            flag = f"--{knob.replace('_', '-')} {format_value(getattr(spec, knob))}"
            found.setdefault(row["config"], {})[flag] = float(rows[other][metric]) / float(own)
    return found


def _siblings(rows: Sequence[dict[str, Any]]) -> list[list[tuple[int, str]]]:
    """For each row, (index, knob) of every row that differs from it in that one knob alone."""
    values = [{name: _value(row.get(name)) for name in IDENTITY} for row in rows]
    found: list[list[tuple[int, str]]] = [[] for _ in rows]
    for knob in KNOBS:
        groups: dict[tuple[Hashable, ...], list[int]] = {}
        for index, value in enumerate(values):
            key = tuple(value[name] for name in IDENTITY if name != knob)
            groups.setdefault(key, []).append(index)
        for group in groups.values():
            for mine in group:
                found[mine] += [(other, knob) for other in group if values[other][knob] != values[mine][knob]]
    return found


def _beyond_chance(runs: Mapping[str, Sequence[float]], mine: str, theirs: str) -> bool:
    own, other = runs.get(mine, ()), runs.get(theirs, ())
    return bool(own) and bool(other) and mann_whitney(other, own).p_either_way <= ALPHA


def _value(value: Any) -> Hashable:
    return _MISSING if is_missing(value) else value
