"""The machine fingerprint carried by every record, and what devices this machine offers.

The host half (CPU, memory, OS, package versions, GPUs through NVML, git commit) needs no
torch; the runtime half (BLAS, OpenMP, CUDA, cuDNN) is read by the training child, which
has torch loaded anyway, and merged in.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from . import __version__
from .spec import Capabilities

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "OMP_PROC_BIND")
# The fields whose difference makes two records incomparable for timing.
COMPARABLE_FIELDS = ("cpu_model", "logical_cores", "gpu_name", "torch", "cuda", "threads_env")


def host_fingerprint() -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "vaebench": __version__,
        "git_commit": git_commit(),
        "threads_env": threads_env(),
    }
    info.update(gpu_fingerprint())
    return info


def runtime_fingerprint() -> dict[str, Any]:
    """What torch itself reports; call only where torch is already imported."""
    import torch

    config = torch.__config__.show()
    info: dict[str, Any] = {
        "blas": _blas_name(config),
        "openmp": "OpenMP" in torch.__config__.parallel_info(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if torch.cuda.is_available() else "",
        "threads_env": threads_env(),  # as the training process saw them
    }
    return info


def threads_env() -> str:
    return ",".join(f"{k}={os.environ[k]}" for k in THREAD_ENV_VARS if k in os.environ)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_fingerprint() -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver: no GPU fields
        return {"gpu_name": "", "gpu_count": 0}
    try:
        count = pynvml.nvmlDeviceGetCount()
        names, limits = [], []
        for index in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            names.append(name.decode() if isinstance(name, bytes) else name)
            try:
                limits.append(str(pynvml.nvmlDeviceGetPowerManagementLimit(handle) // 1000))
            except Exception:  # noqa: BLE001
                limits.append("")
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "gpu_name": ";".join(names),
            "gpu_count": count,
            "gpu_driver": driver.decode() if isinstance(driver, bytes) else driver,
            "gpu_power_limit_w": ";".join(limits),
        }
    finally:
        pynvml.nvmlShutdown()


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
            text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if out.returncode != 0:
        return ""
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def capabilities(*, probe_torch: bool) -> Capabilities:
    """Devices here; `probe_torch` imports torch to ask CUDA and MPS (skip it for CPU-only work)."""
    cores = os.cpu_count() or 1
    if not probe_torch:
        return Capabilities(logical_cores=cores)
    import torch

    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Capabilities(cuda_devices=torch.cuda.device_count(), mps=mps, logical_cores=cores)


def cache_dir() -> Path:
    base = os.environ.get("VAEBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vaebench"
    )
    return Path(base)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _blas_name(config: str) -> str:
    lowered = config.lower()
    for name in ("mkl", "openblas", "accelerate", "blis"):
        if f"blas_info={name}" in lowered or f"use_{name}=on" in lowered or name in lowered:
            return {"mkl": "MKL", "openblas": "OpenBLAS", "accelerate": "Accelerate", "blis": "BLIS"}[name]
    return "unknown"
