"""A sweep's plan: the grid of run specs, what cannot run here, and the order to run it in;
and what a user hands vaebench besides a run's spec, each kind checked in one place: the
options of how to run (timeout, monitor rate, repeats, folders), set by any command's flags or
a sweep file, and the TOML files themselves (sweep files, claim files).

Pure and stdlib only. Repeats are interleaved: each round runs every point once, in an order
shuffled by a fixed seed, so slow drift of the machine (thermals, a neighbour's job) spreads
over all configurations instead of favouring the ones that ran first.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .rules import MAX_REPEATS, MAX_RUNS, MAX_SAMPLE_HZ, MAX_TIMEOUT_S, MIN_SAMPLE_HZ
from .spec import DEFAULT, MAXIMUMS, MINIMUMS, SPEC_FIELDS, Capabilities, RunSpec, parse_value, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SWEEP_OPTIONS = ("repeats", "order_seed", "out", "timeout", "data_dir", "sample_hz", "name", "allocator_path")
EXECUTORS = ("local", "slurm", "submitit-local")
EXECUTOR_KEYS = ("kind", "partition", "time", "gpus_per_job", "cpus_per_job", "max_parallel", "extra")
DEFAULT_JOB_MINUTES = 60
SUBMITIT_LOCAL_PARALLEL = 2  # enough to see a job array's parallelism; --max-parallel 1 for clean timings


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
    executor: dict[str, Any] = field(default_factory=dict)  # the file's [executor] table, as written

    def base(self) -> RunSpec:
        return dataclasses.replace(DEFAULT, **self.fixed).normalized()

    @property
    def runs(self) -> int:
        """Grid points times repeats, duplicates counted: known before anything is expanded."""
        return math.prod(len(values) for values in self.grid.values()) * self.repeats

    def specs(self) -> list[RunSpec]:
        """Every combination of the grid over the fixed fields, duplicates removed, in grid order;
        raises SweepError past `MAX_RUNS` runs, before expanding anything."""
        if self.runs > MAX_RUNS:
            raise SweepError(f"the sweep asks for {self.runs:,} runs (grid times repeats); at most "
                             f"{MAX_RUNS:,}: split it, or fewer repeats")
        names = list(self.grid)
        base = self.base()
        seen: dict[RunSpec, None] = {}
        for values in itertools.product(*(self.grid[name] for name in names)):
            spec = dataclasses.replace(base, **dict(zip(names, values, strict=True))).normalized()
            seen.setdefault(spec, None)
        return list(seen)


def split_valid(specs: Iterable[RunSpec], caps: Capabilities | None) -> tuple[list[RunSpec], list[Skipped]]:
    """The specs that can run here, and those that cannot with their reason. A value that is
    wrong on its own (`Problem.of_value`) is bad input, not a point to skip: SweepError."""
    runnable, skipped = [], []
    for spec in specs:
        problems = validate(spec, caps)
        wrong = [p for p in problems if p.of_value]
        if wrong:
            raise SweepError("; ".join(str(p) for p in wrong))
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
        flag = f"--{name.replace('_', '-')}"
        items = [item.strip() for item in str(text).split(",")]
        if not any(items):
            raise SweepError(f"{flag} needs at least one value")
        if not all(items):
            raise SweepError(f"{flag} {text!r}: an empty value between commas (a typo?)")
        try:
            axes[name] = [parse_value(name, item) for item in items]
        except UsageError as exc:
            raise SweepError(f"{flag}: {exc}") from None
    return axes


def load_config(path: str | Path) -> SweepConfig:
    """Read a sweep file: top-level options, `[grid]` lists and `[run]` fixed values; every
    value is checked as the command line's would be, and a refusal names file, table and key."""
    path = Path(path)
    document = read_toml(path, "sweep file", SweepError)
    unknown = set(document) - {"grid", "run", "executor", *SWEEP_OPTIONS}
    if unknown:
        raise SweepError(f"{path}: unknown keys {sorted(unknown)}; expected [grid], [run], [executor] "
                         f"and {SWEEP_OPTIONS}")
    executor = document.get("executor", {})
    if not isinstance(executor, dict) or set(executor) - set(EXECUTOR_KEYS):
        wrong = sorted(set(executor) - set(EXECUTOR_KEYS)) if isinstance(executor, dict) else executor
        raise SweepError(f"{path}: [executor] has unknown keys {wrong}; known: {', '.join(EXECUTOR_KEYS)}")
    try:
        grid = {name: _typed(path, "grid", name, values if isinstance(values, list) else [values])
                for name, values in toml_table(document, "grid", f"{path}: grid").items()}
        fixed = {name: _typed(path, "run", name, [value])[0]
                 for name, value in toml_table(document, "run", f"{path}: run").items()}
        both = sorted(set(grid) & set(fixed))
        if both:
            raise SweepError(f"{path}: {', '.join(both)} in both [grid] and [run]; keep each field in one of them")
        return SweepConfig(grid=grid, fixed=fixed,
                           repeats=check_repeats(document.get("repeats", 1), f"{path}: repeats"),
                           order_seed=_order_seed(document.get("order_seed", 0), f"{path}: order_seed"),
                           options=run_options(document, path), executor=executor)
    except SweepError:
        raise
    except UsageError as exc:
        raise SweepError(str(exc)) from None


def _order_seed(value: Any, where: str) -> int:
    most, why = MAXIMUMS["seed"]
    return check_whole(value, where, least=MINIMUMS["seed"], most=most, why=why)


def _typed(path: Path, table: str, name: str, values: list[Any]) -> list[Any]:
    where = f"{path}: [{table}] {name}"
    if name not in SPEC_FIELDS:
        raise SweepError(f"{path}: [{table}] unknown run field {name!r}; known: {', '.join(SPEC_FIELDS)}")
    if not values:
        raise SweepError(f"{where}: needs at least one value")
    for value in values:
        if isinstance(value, list | dict):
            raise SweepError(f"{where}: expected {'a value or a list of values' if table == 'grid' else 'one value'}, "
                             f"got {value!r}")
    try:
        return [toml_run_value(name, v) for v in values]
    except UsageError as exc:
        raise SweepError(f"{where}: {exc}") from None


def toml_run_value(name: str, value: Any) -> Any:
    """A run field's value as a TOML file holds it (true, 64, "cuda"), parsed as the command line's is."""
    return parse_value(name, str(value).lower() if isinstance(value, bool) else str(value))


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
    repeats = check_repeats(given.pop("repeats"), "--repeats") if "repeats" in given else config.repeats
    order_seed = _order_seed(given.pop("order_seed"), "--order-seed") if "order_seed" in given else config.order_seed
    return dataclasses.replace(
        config,
        grid=grid,
        fixed=fixed,
        repeats=repeats,
        order_seed=order_seed,
        options={**config.options, **run_options(given)},
    )


@dataclass(frozen=True)
class ExecutorSettings:
    """Where a sweep's points run: here, one after another (`local`), or as jobs through submitit,
    on a Slurm cluster (`slurm`) or as local processes (`submitit-local`, for trying a set-up)."""

    kind: str = "local"
    partition: str = ""  # Slurm partition; empty: the cluster's default
    time_min: int = DEFAULT_JOB_MINUTES  # each job's time limit: Slurm's --time, submitit-local's timeout
    gpus_per_job: int | None = None  # None: a CUDA point's ranks (one GPU each), none for a CPU point
    cpus_per_job: int | None = None  # None: a point's threads x ranks where threads is set, else Slurm's default
    max_parallel: int | None = None  # jobs at once; None: Slurm's array limit, SUBMITIT_LOCAL_PARALLEL on one machine
    extra: tuple[tuple[str, str], ...] = ()  # more of submitit's Slurm parameters, KEY=VALUE

    @property
    def submitit(self) -> bool:
        return self.kind != "local"

    def parallel(self) -> int | None:
        """Jobs at once: as given, else a couple on one machine, else Slurm's own limit."""
        if self.max_parallel is not None:
            return self.max_parallel
        return SUBMITIT_LOCAL_PARALLEL if self.kind == "submitit-local" else None


def executor_settings(table: Mapping[str, Any], overrides: Mapping[str, Any]) -> ExecutorSettings:
    """A sweep file's [executor] table with the command line's options over it; raises SweepError."""
    given = {**table, **{k: v for k, v in overrides.items() if v not in (None, [], ())}}
    kind = str(given.get("kind", "local"))
    if kind not in EXECUTORS:
        raise SweepError(f"unknown executor {kind!r}; choose from {', '.join(EXECUTORS)}")
    extra = given.get("extra", {})
    if not isinstance(extra, Mapping | list | tuple):
        raise SweepError(f"[executor] extra must be a table or a list of KEY=VALUE, got {extra!r}")
    pairs = list(extra.items()) if isinstance(extra, Mapping) else [parse_pair(text) for text in extra]
    settings = ExecutorSettings(
        kind=kind,
        partition=str(given.get("partition", "")),
        time_min=parse_minutes(given["time"]) if "time" in given else DEFAULT_JOB_MINUTES,
        gpus_per_job=_count(given, "gpus_per_job", 0),
        cpus_per_job=_count(given, "cpus_per_job", 1),
        max_parallel=_count(given, "max_parallel", 1),
        extra=tuple((str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in pairs),
    )
    return settings


def parse_pair(text: str) -> tuple[str, str]:
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip():
        raise SweepError(f"--slurm-extra takes KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def parse_minutes(value: Any) -> int:
    """A time limit as whole minutes: 90, '90', '90m', '2h', '1:30:00', '2-00:00:00' (Slurm's forms)."""
    text = str(value).strip().lower()
    try:
        if text.endswith(("s", "m", "h")):
            scale = {"s": 1 / 60, "m": 1, "h": 60}[text[-1]]
            minutes = float(text[:-1]) * scale
        elif ":" in text or "-" in text:
            days, _, clock = text.rpartition("-")
            parts = [float(p) for p in clock.split(":")]
            hours, mins, secs = ([0.0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0.0, parts[0], 0.0)
            minutes = (float(days) if days else 0) * 1440 + hours * 60 + mins + secs / 60
        else:
            minutes = float(text)
    except ValueError:
        raise SweepError(f"not a time limit: {value!r}; write minutes (90), 90m, 2h or H:MM:SS") from None
    if not minutes > 0:
        raise SweepError(f"a time limit must be positive, got {value!r}")
    return max(1, math.ceil(minutes))


def _count(given: Mapping[str, Any], name: str, least: int) -> int | None:
    if given.get(name) is None:
        return None
    try:
        value = int(given[name])
    except (TypeError, ValueError):
        raise SweepError(f"{name.replace('_', '-')} must be a whole number, got {given[name]!r}") from None
    if value < least:
        raise SweepError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    return value


# The options of how to run and the TOML files, checked --------------------------------------
# Every check takes `where`, the value's source as the user wrote it (`--timeout`, or
# `ci.toml: timeout`), so that a refusal names the flag or the file and key to fix.


def check_number(value: Any, where: str) -> float:
    """A finite real number (an int or a float, not a boolean, not text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def check_whole(value: Any, where: str, *, least: int, most: int, why: str = "") -> int:
    """A whole number within [least, most]; `why` says where the upper bound comes from."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where} must be a whole number, got {value!r}")
    if value < least:
        raise UsageError(f"{where} must be at least {least}, got {value}")
    if value > most:
        raise UsageError(f"{where} must be at most {most:,}{f' ({why})' if why else ''}, got {value:,}")
    return value


def check_timeout(value: Any, where: str) -> float:
    """Seconds after which a run is killed and recorded as failed."""
    seconds = check_number(value, where)
    if not seconds > 0:
        raise UsageError(f"{where} must be positive, got {value!r}")
    if seconds > MAX_TIMEOUT_S:
        raise UsageError(f"{where} must be at most {MAX_TIMEOUT_S:,.0f} s (a week), got {value!r}")
    return seconds


def check_sample_hz(value: Any, where: str) -> float:
    """The outside monitor's rate: at least `MIN_SAMPLE_HZ`, and at most `MAX_SAMPLE_HZ` so that
    it costs the measured run less than 1 % of a core."""
    hz = check_number(value, where)
    if not hz > 0:
        raise UsageError(f"{where} must be positive, got {value!r}")
    if hz < MIN_SAMPLE_HZ:
        raise UsageError(f"{where} must be at least {MIN_SAMPLE_HZ:g} Hz (one sample every "
                         f"{1 / MIN_SAMPLE_HZ:g} s), got {value!r}")
    if hz > MAX_SAMPLE_HZ:
        raise UsageError(f"{where} must be at most {MAX_SAMPLE_HZ:g} Hz (faster, the monitor would cost the run "
                         f"more than 1% of a core), got {value!r}")
    return hz


def check_repeats(value: Any, where: str, *, least: int = 1) -> int:
    return check_whole(value, where, least=least, most=MAX_REPEATS, why="statistics stop improving long before")


def check_folder(value: Any, where: str) -> Path:
    """A folder to read or write: non-empty text that does not name a file."""
    if not isinstance(value, str):
        raise UsageError(f"{where} must be text naming a folder, got {value!r}")
    if not value.strip():
        raise UsageError(f"{where} must name a folder, got an empty string (write . for the current folder)")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{where}: {value} is a file, not a folder")
    return path


def check_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where} must be non-empty text, got {value!r}")
    return value


def run_options(values: Mapping[str, Any], source: Path | None = None) -> dict[str, Any]:
    """The options of how to run among `values` (out, data_dir, timeout, sample_hz, name, allocator_path),
    checked; absent and None ones are left out. `source` is the sweep file they come from, or
    None for the command line (its flags are named then)."""

    def where(key: str) -> str:
        return f"{source}: {key}" if source is not None else f"--{key.replace('_', '-')}"

    checks: dict[str, Callable[[Any, str], Any]] = {
        "out": lambda value, w: str(check_folder(value, w)),
        "data_dir": lambda value, w: str(check_folder(value, w)),
        "timeout": check_timeout,
        "sample_hz": check_sample_hz,
        "name": check_text,
        "allocator_path": check_text,  # a file; `spec.validate` says when it is not one
    }
    return {key: check(values[key], where(key)) for key, check in checks.items() if values.get(key) is not None}


def read_toml(path: str | Path, what: str, error: type[UsageError] = UsageError) -> dict[str, Any]:
    """A TOML file as a dict; every way it can fail raises `error` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"no {what} at {path}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a {what}: byte {exc.start} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def toml_table(document: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """`document[key]` when it is a table, {} when absent; anything else is refused."""
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table ([{key}] with key = value lines), got {value!r}")
    return value
