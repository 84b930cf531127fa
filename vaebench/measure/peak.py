"""The device's measured matmul peak, the denominator of `flops_frac`; cached per machine.

Measured in its own child process (`python -m vaebench.train.peak DEVICE DTYPE`) so the
measured run never pays for it, and cached under the vaebench cache folder keyed by CPU or
GPU, torch version, dtype and threads. A failed measurement is NaN and is not cached, so
the next run tries again; nor is one taken while other processes used the cores.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from ..machine import cache_dir, cpu_model, gpu_fingerprint, package_version
from ..rules import contended
from ..spec import LATER_FIELDS, RunSpec
from ..storage import atomic_file
from .child_env import child_process_env
from .monitor import machine_busy_cpu_s, outside_pct

PEAK_SETTINGS = ("omp_wait_policy", "allocator", "bind")  # fields that change a matmul's speed, not its shape
JUDGED_WALL_S = 1.0  # a probe shorter than this is not judged for neighbours (a real one takes seconds)


def peak_key(spec: RunSpec) -> str:
    where = gpu_fingerprint().get("gpu_name", "") if spec.is_cuda else cpu_model()
    dtype = "fp32" if spec.amp == "off" else spec.amp
    threads = spec.threads or os.cpu_count()
    key = f"{spec.device}|{where}|torch {package_version('torch')}|{dtype}|threads {threads}"
    # The OpenMP and allocator settings join the key only off their defaults: older caches stay valid.
    extras = [f"{name} {getattr(spec, name)}" for name in PEAK_SETTINGS if getattr(spec, name) != LATER_FIELDS[name]]
    return "|".join([key, *extras])


def cached_peak(
    spec: RunSpec, *, measure: bool = True, timeout: float = 120.0, allocator_path: str = "", at_least: float = 0.0
) -> float:
    """Peak FLOP/s for the spec's device, dtype, threads and OpenMP and allocator settings, measured
    in the run's own environment; NaN if it cannot be measured.

    `at_least` is a rate a run already reached with those settings: a cached peak below it was
    measured while something else held the cores, so it is measured again. A peak only rises:
    the cache keeps the higher of the old and the new measurement.
    """
    path = cache_dir() / "peak_flops.json"
    key = peak_key(spec)
    cache = _read(path)
    cached = float(cache.get(key, math.nan))
    if (_usable(cached) and cached >= at_least) or not measure:
        return cached
    before = _cpu_counts()
    value = _probe(spec, timeout, allocator_path)
    if not _usable(value):
        return cached if _usable(cached) else math.nan
    elsewhere = _elsewhere_pct(before, _cpu_counts())
    value = max(value, cached) if _usable(cached) else value
    if contended(elsewhere):  # a peak measured beside a busy neighbour is low, and would stay cached
        print(f"vaebench: other processes used {elsewhere:.0f}% of a core while the matmul peak was measured; "
              "its value is used for this run only, not cached", file=sys.stderr)
        return value
    cache[key] = value
    _write(path, cache)
    return value


def _cpu_counts() -> tuple[float, float, float]:
    """(wall clock, the machine's busy CPU seconds, this process's children's CPU seconds)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic(), machine_busy_cpu_s(), children.ru_utime + children.ru_stime


def _elsewhere_pct(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """CPU used outside the probe between two counts, in percent of one core; NaN over less than
    `JUDGED_WALL_S`, where /proc/stat's 10 ms ticks would read as a busy neighbour."""
    wall = after[0] - before[0]
    return outside_pct(after[1] - before[1], after[2] - before[2], wall) if wall >= JUDGED_WALL_S else math.nan


def _probe(spec: RunSpec, timeout: float, allocator_path: str = "") -> float:
    """Measure in a child with the run's own environment; NaN, with a line on stderr, on failure."""
    dtype = "fp32" if spec.amp == "off" else spec.amp
    try:
        out = subprocess.run(
            [sys.executable, "-m", "vaebench.train.peak", spec.device, dtype],
            env=child_process_env(spec, allocator_path),
            capture_output=True, text=True, timeout=timeout, check=True,
        )
        value = float(out.stdout.strip().splitlines()[-1])
        if not _usable(value):
            raise ValueError(f"the probe printed {value}")
        return value
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        print(f"vaebench: the matmul peak probe failed ({_why(exc)}); flops_frac will be n/a", file=sys.stderr)
        return math.nan


def _why(exc: Exception) -> str:
    stderr = getattr(exc, "stderr", None)
    last = stderr.strip().splitlines()[-1:] if isinstance(stderr, str) else []
    return f"{type(exc).__name__}: {last[0] if last else exc}"


def _usable(value: object) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def _write(path: Path, cache: dict[str, float]) -> None:
    """Keep the cache where it can be kept; where it cannot (a cache folder that is a file, a full
    disk), the run goes on with the peak just measured, and the next one measures it again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            handle.write(json.dumps(cache, indent=1))
    except OSError as exc:
        print(f"vaebench: the matmul peak could not be cached in {path} ({exc.strerror or exc}); the next run "
              "measures it again", file=sys.stderr)


def _read(path: Path) -> dict[str, float]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}
