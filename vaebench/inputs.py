"""What a user hands vaebench besides a run's spec, each kind checked in one place: the options
of how to run (timeout, monitor rate, repeats, folders) and the TOML files (sweep, claim).

Every check takes `where`, the value's source as the user wrote it (`--timeout`, or
`ci.toml: timeout`), so that a refusal names the flag or the file and key to fix. A run's
own fields (batch size, threads, ...) are checked by `spec.value_problem`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError
from .rules import SAMPLE_HZ

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: past that a timeout guards nothing
# The monitor's cost, measured on the 2-core VM beside a child with two workers: about 0.25 ms
# of CPU per sample (psutil's per-core CPU; the neighbour figure's counters every half second),
# 0.35 % of a core at the default 10 Hz and 0.5-0.6 % at 20 Hz. Past 20 Hz, with NVML's reads on
# a GPU on top, it would cost the measured run more than 1 % of a core.
MAX_SAMPLE_HZ = 20.0
MAX_REPEATS = 1_000  # runs of one configuration: statistics stop improving long before
MAX_RUNS = 10_000  # runs in one sweep (grid times repeats): weeks of a GPU at a minute each


def number(value: Any, where: str) -> float:
    """A finite real number (an int or a float, not a boolean, not text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def whole(value: Any, where: str, *, least: int, most: int, why: str = "") -> int:
    """A whole number within [least, most]; `why` says where the upper bound comes from."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{where} must be a whole number, got {value!r}")
    if value < least:
        raise UsageError(f"{where} must be at least {least}, got {value}")
    if value > most:
        raise UsageError(f"{where} must be at most {most:,}{f' ({why})' if why else ''}, got {value:,}")
    return value


def timeout_s(value: Any, where: str) -> float | None:
    """Seconds after which a run is killed and recorded as failed; None for no limit."""
    if value is None:
        return None
    seconds = number(value, where)
    if not seconds > 0:
        raise UsageError(f"{where} must be positive, got {value!r}")
    if seconds > MAX_TIMEOUT_S:
        raise UsageError(f"{where} must be at most {MAX_TIMEOUT_S:,.0f} s (a week), got {value!r}")
    return seconds


def sample_hz(value: Any, where: str) -> float:
    """The outside monitor's rate: positive, and at most `MAX_SAMPLE_HZ` so that it costs the
    measured run less than 1 % of a core."""
    hz = number(SAMPLE_HZ if value is None else value, where)
    if not hz > 0:
        raise UsageError(f"{where} must be positive, got {value!r}")
    if hz > MAX_SAMPLE_HZ:
        raise UsageError(f"{where} must be at most {MAX_SAMPLE_HZ:g} Hz (faster, the monitor would cost the run "
                         f"more than 1% of a core), got {value!r}")
    return hz


def repeats(value: Any, where: str, *, least: int = 1) -> int:
    return whole(value, where, least=least, most=MAX_REPEATS, why="statistics stop improving long before")


def folder(value: Any, where: str) -> Path:
    """A folder to read or write: non-empty text that does not name a file."""
    if not isinstance(value, str):
        raise UsageError(f"{where} must be text naming a folder, got {value!r}")
    if not value.strip():
        raise UsageError(f"{where} must name a folder, got an empty string (write . for the current folder)")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{where}: {value} is a file, not a folder")
    return path


def text(value: Any, where: str) -> str:
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
        "out": lambda value, w: str(folder(value, w)),
        "data_dir": lambda value, w: str(folder(value, w)),
        "timeout": timeout_s,
        "sample_hz": sample_hz,
        "name": text,
        "allocator_path": text,  # a file; `spec.validate` says when it is not one
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


def table(document: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """`document[key]` when it is a table, {} when absent; anything else is refused."""
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a table ([{key}] with key = value lines), got {value!r}")
    return value
