"""The environment of the children that load torch: their thread pools, OpenMP wait policy,
binding and preloaded allocator, set before torch loads, since the OpenMP runtime and the
loader read them once."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ..machine import allocator_libraries
from ..protocol import PARENT_PID_ENV
from ..spec import RunSpec, allocator_missing

# The pool sizes a child's `threads` sets; the rest of THREAD_ENV_VARS pass through untouched.
THREAD_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int | None) -> dict[str, str]:
    """The variables that size a child's OpenMP and BLAS pools; `None` leaves the inherited ones."""
    return {} if threads is None else {name: str(threads) for name in THREAD_COUNT_VARS}


def wait_policy_env(policy: str) -> dict[str, str]:
    """OMP_WAIT_POLICY, with the spin settings of GNU's and Intel/LLVM's runtimes set to match.

    Each runtime reads its own variable and ignores the other's, so both are set: libgomp's
    GOMP_SPINCOUNT (which, inherited, would overrule the policy) and KMP_BLOCKTIME. active spins
    without end (libgomp's own active value is 30e9 spins, about 5 minutes), passive sleeps in the
    kernel at once; `default` leaves the runtime's own (libgomp: about 3 ms of spinning, 100 spins
    when it has more threads than CPUs) and whatever the environment holds.
    """
    if policy == "active":
        return {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "infinite", "KMP_BLOCKTIME": "infinite"}
    if policy == "passive":
        return {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0"}
    return {}


def bind_env(bind: bool) -> dict[str, str]:
    """One OpenMP thread per core, threads kept on theirs (libgomp and Intel's runtime both read these)."""
    return {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"} if bind else {}


def preload_env(allocator: str, allocator_path: str = "", inherited: str = "") -> dict[str, str]:
    """LD_PRELOAD of the allocator's library before any other preloaded one; raises UsageError
    naming the package to install where it is missing."""
    if allocator == "system":
        return {}
    library = allocator_libraries(allocator_path).get(allocator)
    if not library:
        raise UsageError(allocator_missing(allocator))
    return {"LD_PRELOAD": ":".join(part for part in (library, inherited) if part)}


def child_process_env(spec: RunSpec | None, allocator_path: str = "") -> dict[str, str]:
    """The environment of every vaebench child that loads torch (a run, a screen, the peak probe);
    None for a helper process that trains nothing itself (the submitit-local queue).

    The thread, wait-policy, binding and allocator settings must be in place before torch loads
    (the OpenMP runtime reads them once, the loader preloads once), and CUDA_DEVICE_ORDER makes
    CUDA ordinals match NVML's indices, which the parent's monitor uses. PARENT_PID_ENV names
    this process: the child dies with it (train.lifeline), even if it died first.
    """
    env = dict(os.environ)
    env[PARENT_PID_ENV] = str(os.getpid())
    if spec is not None:
        env |= thread_env(spec.threads) | wait_policy_env(spec.omp_wait_policy) | bind_env(spec.bind)
        env |= preload_env(spec.allocator, allocator_path, os.environ.get("LD_PRELOAD", ""))
    if spec is not None and spec.profile and not spec.is_cuda:
        env.setdefault("KINETO_LOG_LEVEL", "6")  # quiet: else kineto logs its start, stop and a missing GPU
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env["PYTHONUNBUFFERED"] = "1"
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env
