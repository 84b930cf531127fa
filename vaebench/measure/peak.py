"""The device's measured matmul peak, the denominator of `flops_frac`; cached per machine.

Measured in its own child process (`python -m vaebench.train.peak DEVICE DTYPE`) so the
measured run never pays for it, and cached under the vaebench cache folder keyed by CPU or
GPU, torch version, dtype and threads. A failed measurement is NaN and is not cached, so
the next run tries again.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from ..machine import cache_dir, child_process_env, cpu_model, gpu_fingerprint, package_version
from ..spec import LATER_FIELDS, RunSpec

PEAK_SETTINGS = ("omp_wait_policy", "allocator", "bind")  # fields that change a matmul's speed, not its shape


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
    value = _probe(spec, timeout, allocator_path)
    if not _usable(value):
        return cached if _usable(cached) else math.nan
    value = max(value, cached) if _usable(cached) else value
    cache[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return value


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


def _read(path: Path) -> dict[str, float]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}
