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
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .spec import Capabilities

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "OMP_PROC_BIND",
    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "LD_PRELOAD",
)
# The pool sizes a child's `threads` sets; the rest of THREAD_ENV_VARS pass through untouched.
THREAD_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
GVISOR = "gvisor"
# The fields whose difference makes two records incomparable for timing.
COMPARABLE_FIELDS = ("cpu_model", "logical_cores", "gpu_name", "torch", "cuda", "threads_env")


# What makes two hosts the same machine in a report: one row of its machines table each.
MACHINE_FIELDS = ("cpu_model", "logical_cores", "gpu_name")
_CPU_NOISE = re.compile(r"\((?:R|TM)\)|\bCPU\b|\bProcessor\b|@ *[\d.]+ *GHz|\d+-Core", re.I)


def machine_label(fingerprint: Mapping[str, Any]) -> str:
    """A short name for the hardware a record ran on, from its fingerprint (keys with or without
    the `fp_` of a table row): its GPUs if it has any, then its CPU model and logical cores;
    empty when the record carries none (a job lost before it could say)."""

    def field(name: str) -> Any:
        value = fingerprint.get(f"fp_{name}", fingerprint.get(name))
        return None if value is None or (isinstance(value, float) and value != value) else value

    cpu = " ".join(_CPU_NOISE.sub(" ", str(field("cpu_model") or "")).split())
    cores = field("logical_cores")
    parts = [f"{cpu} x{int(cores)}" if cpu and cores else cpu]
    gpus = [name for name in str(field("gpu_name") or "").split(";") if name]
    if gpus:
        names = list(dict.fromkeys(gpus))
        parts.insert(0, " + ".join(f"{len(gpus) // len(names)}x {n}" if len(gpus) > 1 else n for n in names))
    return ", ".join(p for p in parts if p)


def host_fingerprint() -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "kernel": platform.release(),
        "sandbox": sandbox(platform.release(), _read_text("/proc/version")),
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "torchvision": package_version("torchvision"),
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


def thread_env(threads: int | None) -> dict[str, str]:
    """The variables that size a child's OpenMP and BLAS pools; `None` leaves the inherited ones."""
    return {} if threads is None else {name: str(threads) for name in THREAD_COUNT_VARS}


def child_process_env(threads: int | None) -> dict[str, str]:
    """The environment of every vaebench child that loads torch (a run, a screen, the peak probe).

    The thread variables must be in place before torch loads, and CUDA_DEVICE_ORDER makes CUDA
    ordinals match NVML's indices, which the parent's monitor uses.
    """
    env = dict(os.environ) | thread_env(threads)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env["PYTHONUNBUFFERED"] = "1"
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def sandbox(release: str, proc_version: str) -> str:
    """"gvisor" when the kernel strings are gVisor's, else "".

    gVisor's Sentry reports release 4.4.0 (a real 4.4 kernel adds a suffix, `4.4.0-210-generic`)
    and a /proc/version dated Sun Jan 10 15:06:54 PST 2016. Under it /proc/stat reads zeros
    and rusage is the Sentry's own accounting.
    """
    gvisor_version = "Sun Jan 10 15:06:54 PST 2016" in proc_version or "gvisor" in proc_version.lower()
    return GVISOR if release.strip() == "4.4.0" or gvisor_version else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_fingerprint() -> dict[str, Any]:
    """GPU names, count, driver and power limits through NVML; a refused call leaves its field empty."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVIDIA driver: no GPU fields
        return {"gpu_name": "", "gpu_count": 0}
    try:
        count = _nvml_try(pynvml.nvmlDeviceGetCount)
        count = count if isinstance(count, int) else 0
        devices = [_device_fields(pynvml, index) for index in range(count)]
        return {
            "gpu_name": ";".join(name for name, _ in devices),
            "gpu_count": count,
            "gpu_driver": _text(_nvml_try(pynvml.nvmlSystemGetDriverVersion)),
            "gpu_power_limit_w": ";".join(limit for _, limit in devices),
        }
    finally:
        _nvml_try(pynvml.nvmlShutdown)


def _device_fields(nvml: Any, index: int) -> tuple[str, str]:
    """One GPU's name and power limit in watts, "" for each NVML refuses."""
    handle = _nvml_try(nvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return "", ""
    name = _text(_nvml_try(nvml.nvmlDeviceGetName, handle))
    limit_mw = _nvml_try(nvml.nvmlDeviceGetPowerManagementLimit, handle)
    return name, str(limit_mw // 1000) if isinstance(limit_mw, int) else ""


def _nvml_try(call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)`, or None where NVML refuses it (sandboxes and old drivers refuse some queries)."""
    try:
        return call(*args)
    except Exception:  # noqa: BLE001 - pynvml raises one error class per refusal
        return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


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


def package_version(package: str) -> str:
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
