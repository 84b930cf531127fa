from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from vaebench import machine
from vaebench.machine import GVISOR, child_process_env, gpu_fingerprint, sandbox, thread_env

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
    env = child_process_env(2)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert child_process_env(None)["OMP_NUM_THREADS"] == "16"


def test_machine_labels_name_the_gpu_then_the_cpu() -> None:
    h200 = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", "logical_cores": 32,
            "gpu_name": "NVIDIA H200"}
    assert machine.machine_label(h200) == "NVIDIA H200, Intel Xeon Platinum 8480+ x32"
    row = {"fp_cpu_model": "AMD EPYC 7763 64-Core Processor", "fp_logical_cores": 128.0, "fp_gpu_name": ""}
    assert machine.machine_label(row) == "AMD EPYC 7763 x128"
    assert machine.machine_label({"gpu_name": "A100;A100", "cpu_model": "EPYC"}) == "2x A100, EPYC"
    assert machine.machine_label({}) == ""
