"""A sweep's plan: the grid of run specs, what cannot run here, and the order to run it in.

Pure and stdlib only. Repeats are interleaved: each round runs every point once, in an order
shuffled by a fixed seed, so slow drift of the machine (thermals, a neighbour's job) spreads
over all configurations instead of favouring the ones that ran first.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .spec import DEFAULT, SPEC_FIELDS, Capabilities, RunSpec, parse_value, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SWEEP_OPTIONS = ("repeats", "order_seed", "out", "timeout", "data_dir", "sample_hz", "name")


class SweepError(UsageError):
    """A sweep file or grid that cannot be understood; the message says where."""


@dataclass(frozen=True)
class Point:
    spec: RunSpec
    repeat: int


@dataclass(frozen=True)
class Skipped:
    spec: RunSpec
    reason: str


@dataclass(frozen=True)
class SweepConfig:
    """A grid (field -> values), the fields fixed for every point, and how to run it."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    repeats: int = 1
    order_seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # out, timeout, data_dir, ...

    def base(self) -> RunSpec:
        return dataclasses.replace(DEFAULT, **self.fixed).normalized()

    def specs(self) -> list[RunSpec]:
        """Every combination of the grid over the fixed fields, duplicates removed, in grid order."""
        names = list(self.grid)
        base = self.base()
        seen: dict[RunSpec, None] = {}
        for values in itertools.product(*(self.grid[name] for name in names)):
            spec = dataclasses.replace(base, **dict(zip(names, values, strict=True))).normalized()
            seen.setdefault(spec, None)
        return list(seen)


def split_valid(specs: Iterable[RunSpec], caps: Capabilities | None) -> tuple[list[RunSpec], list[Skipped]]:
    runnable, skipped = [], []
    for spec in specs:
        problems = validate(spec, caps)
        if problems:
            skipped.append(Skipped(spec, "; ".join(str(p) for p in problems)))
        else:
            runnable.append(spec)
    return runnable, skipped


def interleave(specs: Sequence[RunSpec], repeats: int, seed: int = 0) -> list[Point]:
    """Round r runs every spec once, shuffled; a round never starts with the spec that ended the last."""
    rng = random.Random(seed)
    points: list[Point] = []
    for repeat in range(repeats):
        order = list(specs)
        rng.shuffle(order)
        if points and len(order) > 1 and order[0] == points[-1].spec:
            order[0], order[1] = order[1], order[0]
        points.extend(Point(spec, repeat) for spec in order)
    return points


def parse_axes(values: Mapping[str, str | None]) -> dict[str, list[Any]]:
    """Command-line comma lists (`"1,2"`) into typed axis values; None means not given."""
    axes: dict[str, list[Any]] = {}
    for name, text in values.items():
        if text is None:
            continue
        items = [item for item in str(text).split(",") if item.strip()]
        if not items:
            raise SweepError(f"--{name.replace('_', '-')} needs at least one value")
        axes[name] = [parse_value(name, item) for item in items]
    return axes


def load_config(path: str | Path) -> SweepConfig:
    """Read a sweep file: top-level options, `[grid]` lists and `[run]` fixed values."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"no sweep file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(document) - {"grid", "run", *SWEEP_OPTIONS}
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}; expected [grid], [run] and {SWEEP_OPTIONS}")
    grid = {name: _typed(path, name, v if isinstance(v, list) else [v]) for name, v in document.get("grid", {}).items()}
    fixed = {name: _typed(path, name, [v])[0] for name, v in document.get("run", {}).items()}
    options = {k: document[k] for k in SWEEP_OPTIONS if k in document and k not in ("repeats", "order_seed")}
    return SweepConfig(
        grid=grid,
        fixed=fixed,
        repeats=int(document.get("repeats", 1)),
        order_seed=int(document.get("order_seed", 0)),
        options=options,
    )


def _typed(path: Path, name: str, values: list[Any]) -> list[Any]:
    if name not in SPEC_FIELDS:
        raise SweepError(f"{path}: unknown run field {name!r}; known: {', '.join(SPEC_FIELDS)}")
    try:
        return [parse_value(name, str(v).lower() if isinstance(v, bool) else str(v)) for v in values]
    except ValueError as exc:
        raise SweepError(f"{path}: {exc}") from None


def merge(config: SweepConfig, axes: Mapping[str, list[Any]], **overrides: Any) -> SweepConfig:
    """Command-line axes replace the file's: a single value is fixed, a list joins the grid."""
    grid = {k: v for k, v in config.grid.items() if k not in axes}
    fixed = {k: v for k, v in config.fixed.items() if k not in axes}
    for name, values in axes.items():
        if len(values) == 1:
            fixed[name] = values[0]
        else:
            grid[name] = list(values)
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(
        config,
        grid=grid,
        fixed=fixed,
        repeats=given.pop("repeats", config.repeats),
        order_seed=given.pop("order_seed", config.order_seed),
        options={**config.options, **given},
    )
