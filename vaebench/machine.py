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
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UsageError
from .spec import ALLOCATORS, Capabilities

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "OMP_PROC_BIND", "OMP_PLACES",
    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "LD_PRELOAD",
)
GVISOR = "gvisor"
# The fields whose difference makes two records incomparable for timing.
COMPARABLE_FIELDS = ("cpu_model", "logical_cores", "gpu_name", "torch", "cuda", "threads_env")
# The shared libraries each preloadable allocator is found as in ldconfig's cache, best first.
ALLOCATOR_LIBRARIES = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
}
# OpenMP runtimes by the file name they are loaded as (torch's wheels bundle GNU's libgomp).
OPENMP_RUNTIMES = (("libgomp", "libgomp (GNU)"), ("libiomp5", "libiomp5 (Intel)"), ("libomp", "libomp (LLVM)"))


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
        "usable_cores": usable_cores(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),  # GiB, as free -g counts
        "os": f"{platform.system()} {platform.release()}",
        "distro": distro(),
        "kernel": platform.release(),
        "sandbox": sandbox(platform.release(), _read_text("/proc/version")),
        "hypervisor": "hypervisor" in cpu_flags(),  # a virtual machine: sys time is its guest kernel's
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
    info.update(loaded_runtimes(_read_text("/proc/self/maps")))
    return info


def loaded_runtimes(maps: str) -> dict[str, str]:
    """The OpenMP runtime and the allocator a process really runs with, from its /proc/self/maps:
    what was preloaded is checked, not assumed. Empty where the maps cannot be read (macOS)."""
    if not maps:
        return {}
    paths = {line.split()[-1] for line in maps.splitlines() if "/" in line}
    names = {os.path.basename(path): path for path in paths}
    openmp = next((label for prefix, label in OPENMP_RUNTIMES if any(n.startswith(prefix + ".") or
                                                                      n.startswith(prefix + "-") for n in names)), "")
    for allocator in ALLOCATORS[1:]:
        found = sorted(path for name, path in names.items() if name.startswith(f"lib{allocator}"))
        if found:
            return {"openmp_runtime": openmp, "allocator": allocator, "allocator_library": found[0]}
    return {"openmp_runtime": openmp, "allocator": "system", "allocator_library": ""}


def threads_env() -> str:
    return ",".join(f"{k}={os.environ[k]}" for k in THREAD_ENV_VARS if k in os.environ)


def proc_stat_fields(path: Path) -> list[str] | None:
    """The fields of a /proc `stat` file after the parenthesized name, which may hold spaces:
    the state letter first, then the parent's pid; None where the file cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def allocator_of_path(allocator_path: str) -> str | None:
    """The allocator a library's file name names (libjemalloc.so.2: jemalloc), or None."""
    return next((n for n in ALLOCATOR_LIBRARIES if n in os.path.basename(allocator_path)), None)


def allocator_libraries(allocator_path: str = "") -> dict[str, str]:
    """The preloadable allocators here, name -> library, from ldconfig's cache; `allocator_path`
    (--allocator-path) stands in for the allocator its file name names. Raises UsageError for a
    path that is missing or names neither."""
    found = dict(_ldconfig_allocators())
    if allocator_path:
        name = allocator_of_path(allocator_path)
        if not os.path.isfile(allocator_path):
            raise UsageError(f"--allocator-path {allocator_path}: no such file")
        if name is None:
            raise UsageError(f"--allocator-path {allocator_path}: cannot tell which allocator it is; its file name "
                             f"should contain {' or '.join(ALLOCATOR_LIBRARIES)}")
        found[name] = os.path.abspath(allocator_path)
    return found


def allocators_in(ldconfig_cache: str) -> dict[str, str]:
    """Allocator -> library path from `ldconfig -p`'s listing (lines `soname (flags) => path`)."""
    libraries: dict[str, str] = {}
    for line in ldconfig_cache.splitlines():
        name, arrow, path = line.strip().partition(" => ")
        if arrow:
            libraries.setdefault(name.split(" (")[0].strip(), path.strip())
    found = {}
    for allocator, sonames in ALLOCATOR_LIBRARIES.items():
        library = next((libraries[s] for s in sonames if s in libraries), None)
        if library:
            found[allocator] = library
    return found


@functools.lru_cache(maxsize=1)
def _ldconfig_allocators() -> tuple[tuple[str, str], ...]:
    tool = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                              if os.path.exists(p)), None)
    if tool is None:  # macOS, or a system without glibc's loader cache
        return ()
    try:
        listing = subprocess.run([tool, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(allocators_in(listing).items())


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS has no affinity mask
        return os.cpu_count() or 1


def sandbox(release: str, proc_version: str) -> str:
    """"gvisor" when the kernel strings are gVisor's, else "".

    gVisor's Sentry reports release 4.4.0 (a real 4.4 kernel adds a suffix, `4.4.0-210-generic`)
    and a /proc/version dated Sun Jan 10 15:06:54 PST 2016. Under it /proc/stat reads zeros
    and rusage is the Sentry's own accounting.
    """
    gvisor_version = "Sun Jan 10 15:06:54 PST 2016" in proc_version or "gvisor" in proc_version.lower()
    return GVISOR if release.strip() == "4.4.0" or gvisor_version else ""


def distro() -> str:
    """The Linux distribution's name and release (`Debian GNU/Linux 12 (bookworm)`), else ""."""
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    for line in _read_text("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


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
    """vaebench's own commit, when it runs from its checkout; "" when installed elsewhere, even
    inside some other repository (a venv in the user's project must not report the project's)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True,
            timeout=5,
        )
        lines = out.stdout.split()
        if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != here.parent:
            return ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
            text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return lines[1] + ("-dirty" if dirty.stdout.strip() else "")


def capabilities(*, probe_torch: bool, allocator_path: str = "") -> Capabilities:
    """Devices and allocators here; `probe_torch` imports torch to ask CUDA and MPS (skip it for
    CPU-only work); `allocator_path` is --allocator-path."""
    cores = os.cpu_count() or 1
    allocators = tuple(sorted(allocator_libraries(allocator_path)))
    if not probe_torch:
        return Capabilities(logical_cores=cores, allocators=allocators)
    import torch

    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Capabilities(cuda_devices=torch.cuda.device_count(), mps=mps, logical_cores=cores, allocators=allocators)


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
