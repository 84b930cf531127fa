"""The device's measured matmul peak, the denominator of `flops_frac`; cached per machine.

Measured in its own child process (`python -m vaebench.peak DEVICE DTYPE THREADS`) so the
measured run never pays for it, and cached under the vaebench cache folder keyed by CPU or
GPU, torch version, dtype and threads.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from .machine import cache_dir, cpu_model, gpu_fingerprint, host_fingerprint
from .spec import RunSpec

CPU_SIZE = 1024  # big enough to reach BLAS's steady speed, small enough for a second's work
GPU_SIZE = 8192
REPEATS = 10


def peak_key(spec: RunSpec) -> str:
    where = gpu_fingerprint().get("gpu_name", "") if spec.is_cuda else cpu_model()
    dtype = "fp32" if spec.amp == "off" else spec.amp
    threads = spec.threads or os.cpu_count()
    return f"{spec.device}|{where}|torch {host_fingerprint()['torch']}|{dtype}|threads {threads}"


def cached_peak(spec: RunSpec, *, measure: bool = True, timeout: float = 120.0) -> float:
    """Peak FLOP/s for the spec's device, dtype and threads; NaN if it cannot be measured."""
    path = cache_dir() / "peak_flops.json"
    key = peak_key(spec)
    cache = _read(path)
    if key in cache or not measure:
        return float(cache.get(key, math.nan))
    dtype = "fp32" if spec.amp == "off" else spec.amp
    env = dict(os.environ)
    if spec.threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec.threads)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "vaebench.peak", spec.device, dtype], env=env, capture_output=True,
            text=True, timeout=timeout, check=True,
        )
        value = float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return math.nan
    cache[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return value


def measure(device: str, dtype: str) -> float:
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    size = GPU_SIZE if device.startswith("cuda") else CPU_SIZE
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    best = math.inf
    for _ in range(REPEATS):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _read(path: Path) -> dict[str, float]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    print(measure(sys.argv[1], sys.argv[2]))
