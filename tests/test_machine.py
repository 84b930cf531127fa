from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from vaebench import machine
from vaebench.errors import UsageError
from vaebench.machine import (
    GVISOR,
    allocator_libraries,
    allocators_in,
    gpu_fingerprint,
    loaded_runtimes,
    sandbox,
)
from vaebench.measure.child_env import bind_env, child_process_env, thread_env, wait_policy_env
from vaebench.spec import RunSpec

GVISOR_PROC_VERSION = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n"


class NvmlError(Exception):
    pass


def fake_pynvml(monkeypatch: pytest.MonkeyPatch, refuse: set[str]) -> dict[str, bool]:
    """A pynvml with two GPUs whose named calls raise, as NVML may in a sandbox."""
    state = {"shut": False}

    def call(name: str, value: Any) -> Any:
        def answer(*_: Any) -> Any:
            if name in refuse:
                raise NvmlError(f"{name}: NVML_ERROR_NOT_SUPPORTED")
            return value(*_) if callable(value) else value
        return answer

    module = types.ModuleType("pynvml")
    module.nvmlInit = call("nvmlInit", None)  # type: ignore[attr-defined]
    module.nvmlShutdown = call("nvmlShutdown", lambda: state.update(shut=True))  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = call("nvmlDeviceGetCount", 2)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = call("nvmlDeviceGetHandleByIndex", lambda i: i)  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = call("nvmlDeviceGetName", lambda h: b"NVIDIA H200")  # type: ignore[attr-defined]
    module.nvmlDeviceGetPowerManagementLimit = call(  # type: ignore[attr-defined]
        "nvmlDeviceGetPowerManagementLimit", lambda h: 700_000)
    module.nvmlSystemGetDriverVersion = call("nvmlSystemGetDriverVersion", "580.65")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return state


def test_gpu_fingerprint_reads_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    state = fake_pynvml(monkeypatch, refuse=set())
    assert gpu_fingerprint() == {"gpu_name": "NVIDIA H200;NVIDIA H200", "gpu_count": 2, "gpu_driver": "580.65",
                                 "gpu_power_limit_w": "700;700"}
    assert state["shut"]


@pytest.mark.parametrize("refused, expected", [
    ({"nvmlDeviceGetCount"}, {"gpu_name": "", "gpu_count": 0, "gpu_power_limit_w": ""}),
    ({"nvmlDeviceGetHandleByIndex"}, {"gpu_name": ";", "gpu_count": 2, "gpu_power_limit_w": ";"}),
    ({"nvmlDeviceGetName"}, {"gpu_name": ";", "gpu_power_limit_w": "700;700"}),
    ({"nvmlSystemGetDriverVersion"}, {"gpu_driver": "", "gpu_name": "NVIDIA H200;NVIDIA H200"}),
    ({"nvmlShutdown"}, {"gpu_driver": "580.65"}),
    ({"nvmlInit"}, {"gpu_name": "", "gpu_count": 0}),
])
def test_a_refused_nvml_call_leaves_its_field_empty(
    monkeypatch: pytest.MonkeyPatch, refused: set[str], expected: dict[str, Any]
) -> None:
    fake_pynvml(monkeypatch, refuse=refused)
    found = gpu_fingerprint()
    assert {k: found[k] for k in expected} == expected


def test_every_nvml_call_refused_still_gives_a_host_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pynvml(monkeypatch, refuse={"nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetName",
                                     "nvmlDeviceGetPowerManagementLimit", "nvmlSystemGetDriverVersion",
                                     "nvmlShutdown"})
    info = machine.host_fingerprint()
    assert info["gpu_name"] == "" and info["gpu_driver"] == ""
    assert info["kernel"] and info["sandbox"] in ("", GVISOR)


def test_sandbox_recognizes_gvisor_from_the_kernel_strings() -> None:
    assert sandbox("4.4.0", GVISOR_PROC_VERSION) == GVISOR
    assert sandbox("4.4.0", "") == GVISOR  # /proc/version unreadable
    assert sandbox("6.1.0", "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016") == GVISOR
    assert sandbox("5.15.0", "Linux version 5.15.0 (gVisor)") == GVISOR
    assert sandbox("4.4.0-210-generic", "Linux version 4.4.0-210-generic (buildd@lgw01) #242-Ubuntu SMP") == ""
    assert sandbox("6.8.0-45-generic", "Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075)") == ""


def test_thread_env_sets_every_pool_or_nothing() -> None:
    assert thread_env(None) == {}
    assert thread_env(4) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4"}


def test_child_env_pins_threads_and_cuda_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    env = child_process_env(RunSpec(threads=2))
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert child_process_env(RunSpec())["OMP_NUM_THREADS"] == "16"


def test_a_profiled_cpu_run_keeps_kinetos_log_lines_out_of_its_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    assert child_process_env(RunSpec(profile=True))["KINETO_LOG_LEVEL"] == "6"
    assert "KINETO_LOG_LEVEL" not in child_process_env(RunSpec())
    assert "KINETO_LOG_LEVEL" not in child_process_env(RunSpec(device="cuda", profile=True))  # CUPTI's word counts
    monkeypatch.setenv("KINETO_LOG_LEVEL", "0")
    assert child_process_env(RunSpec(profile=True))["KINETO_LOG_LEVEL"] == "0"


def test_machine_labels_name_the_gpu_then_the_cpu() -> None:
    h200 = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", "logical_cores": 32,
            "gpu_name": "NVIDIA H200"}
    assert machine.machine_label(h200) == "NVIDIA H200, Intel Xeon Platinum 8480+ x32"
    row = {"fp_cpu_model": "AMD EPYC 7763 64-Core Processor", "fp_logical_cores": 128.0, "fp_gpu_name": ""}
    assert machine.machine_label(row) == "AMD EPYC 7763 x128"
    assert machine.machine_label({"gpu_name": "A100;A100", "cpu_model": "EPYC"}) == "2x A100, EPYC"
    assert machine.machine_label({}) == ""


LDCONFIG = """\
1234 libs found in cache `/etc/ld.so.cache'
	libtcmalloc_minimal_debug.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc_minimal_debug.so.4
	libtcmalloc_minimal.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
	libjemalloc.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libjemalloc.so.2
	libc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
"""


def test_allocators_are_found_in_ldconfigs_cache_never_the_debug_build() -> None:
    assert allocators_in(LDCONFIG) == {"jemalloc": "/lib/x86_64-linux-gnu/libjemalloc.so.2",
                                       "tcmalloc": "/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}
    assert allocators_in("") == {}


def test_allocator_path_stands_in_for_the_allocator_its_name_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: ())
    assert allocator_libraries() == {}
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    assert allocator_libraries(str(library)) == {"jemalloc": str(library)}
    with pytest.raises(UsageError, match="no such file"):
        allocator_libraries(str(tmp_path / "libtcmalloc.so"))
    other = tmp_path / "libmimalloc.so"
    other.write_bytes(b"")
    with pytest.raises(UsageError, match="cannot tell which allocator"):
        allocator_libraries(str(other))
    with pytest.raises(UsageError, match="apt-get install libtcmalloc-minimal4"):
        child_process_env(RunSpec(allocator="tcmalloc"))


def test_the_child_environment_carries_every_kernel_knob(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: tuple(allocators_in(LDCONFIG).items()))
    monkeypatch.setenv("GOMP_SPINCOUNT", "12345")  # inherited: it would overrule the policy in libgomp
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    env = child_process_env(RunSpec(threads=4, omp_wait_policy="passive", allocator="jemalloc", bind=True))
    assert (env["OMP_WAIT_POLICY"], env["GOMP_SPINCOUNT"], env["KMP_BLOCKTIME"]) == ("PASSIVE", "0", "0")
    assert env["LD_PRELOAD"] == "/lib/x86_64-linux-gnu/libjemalloc.so.2:/opt/other.so"
    assert (env["OMP_PROC_BIND"], env["OMP_PLACES"]) == ("close", "cores")
    active = child_process_env(RunSpec(omp_wait_policy="active"))
    assert (active["OMP_WAIT_POLICY"], active["GOMP_SPINCOUNT"], active["KMP_BLOCKTIME"]) == (
        "ACTIVE", "infinite", "infinite")
    default = child_process_env(RunSpec())
    assert default["GOMP_SPINCOUNT"] == "12345" and "OMP_WAIT_POLICY" not in default
    assert default["LD_PRELOAD"] == "/opt/other.so" and "OMP_PROC_BIND" not in default
    assert wait_policy_env("default") == {} and bind_env(False) == {}


MAPS = """\
7f10 r-xp 00000000 fe:00 1 /work/.venv/lib/python3.11/site-packages/torch/lib/libgomp.so.1
7f11 r-xp 00000000 fe:00 2 /lib/x86_64-linux-gnu/libjemalloc.so.2
7f12 rw-p 00000000 00:00 0 [heap]
7f13 r-xp 00000000 fe:00 3 /lib/x86_64-linux-gnu/libc.so.6
"""


def test_the_runtimes_a_child_really_loaded_are_read_from_its_maps() -> None:
    assert loaded_runtimes(MAPS) == {"openmp_runtime": "libgomp (GNU)", "allocator": "jemalloc",
                                     "allocator_library": "/lib/x86_64-linux-gnu/libjemalloc.so.2"}
    plain = MAPS.replace("libjemalloc.so.2", "libm.so.6").replace("libgomp.so.1", "libiomp5.so")
    assert loaded_runtimes(plain) == {"openmp_runtime": "libiomp5 (Intel)", "allocator": "system",
                                      "allocator_library": ""}
    assert loaded_runtimes("") == {}


def test_capabilities_list_the_allocators_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: (("jemalloc", "/lib/libjemalloc.so.2"),))
    assert machine.capabilities(probe_torch=False).allocators == ("jemalloc",)


def test_git_commit_is_vaebench_s_own_not_that_of_a_repository_it_is_installed_in(tmp_path: Path) -> None:
    import shutil
    import subprocess

    import vaebench

    project = tmp_path / "project"
    site = project / ".venv" / "site"
    shutil.copytree(Path(vaebench.__file__).parent, site / "vaebench")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    code = "from vaebench.machine import git_commit; print(repr(git_commit()))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "''"
