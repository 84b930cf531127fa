from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest

from vaebench.measure import GpuProbe, Monitor, _visible_index, run_child, summarize

BURN = """
import multiprocessing, time
def burn():
    end = time.process_time() + 0.6
    while time.process_time() < end:
        pass
if __name__ == "__main__":
    procs = [multiprocessing.Process(target=burn) for _ in range(2)]
    [p.start() for p in procs]
    [p.join() for p in procs]
"""


def test_child_tree_cpu_time_includes_its_workers() -> None:
    exit_ = run_child([sys.executable, "-c", BURN], env={"PATH": "/usr/bin:/bin"})
    assert exit_.usage.exit_code == 0 and not exit_.timed_out
    # Two workers burn 0.6 s each while the parent only waits for them.
    assert exit_.usage.user_s + exit_.usage.sys_s >= 1.1
    assert exit_.usage.cpu_pct > 0


def test_timeout_kills_the_whole_group() -> None:
    exit_ = run_child([sys.executable, "-c", "import time; time.sleep(60)"], env={}, timeout=0.5)
    assert exit_.timed_out
    assert exit_.usage.real_s < 10
    assert exit_.signal == 9


class FakeNvml:
    """Answers like pynvml; the energy counter climbs 500 mJ a read; clocks are unsupported."""

    def __init__(self) -> None:
        self.energy = 10_000
        self.util = iter([5, 7, 9, 100])

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=next(self.util), memory=1)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=512 * 2**20)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 100_000

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self.energy += 500
        return self.energy


def test_monitor_keeps_every_sample_with_its_time_and_summarizes() -> None:
    ticks = iter(range(100))
    monitor = Monitor(0.1, gpu=GpuProbe(FakeNvml(), 0), cpu_percent=lambda: [50.0, 100.0],
                      clock=lambda: float(next(ticks)))
    monitor._t0 = 0.0
    for _ in range(3):
        monitor.sample_once()
    assert [s["t"] for s in monitor.samples] == [0.0, 1.0, 2.0]
    assert monitor.samples[0]["cpu_cores"] == [50.0, 100.0]
    assert math.isnan(monitor.samples[0]["gpu_sm_clock_mhz"])
    summary = monitor.summary()
    assert summary.monitor_samples == 3
    assert summary.cpu_util_mean == 75.0
    assert summary.gpu_util_mean == 7.0 and summary.gpu_util_max == 9.0
    assert summary.gpu_mem_max_mb == 512.0 and summary.gpu_power_mean_w == 100.0
    assert summary.gpu_energy_j == pytest.approx(1.0)  # two deltas of 500 mJ
    assert math.isnan(summary.gpu_sm_clock_mean_mhz)
    assert monitor.overhead_s >= 0.0


def test_monitor_thread_samples_at_its_rate() -> None:
    import time

    with Monitor(0.02, cpu_percent=lambda: [1.0]) as monitor:
        time.sleep(0.3)
    assert 5 <= len(monitor.samples) <= 20


def test_summary_without_gpu_is_nan_not_zero() -> None:
    summary = summarize([{"t": 0.0, "cpu_util": 10.0}], 0.1)
    assert math.isnan(summary.gpu_util_mean) and summary.cpu_util_mean == 10.0


def test_cuda_visible_devices_renumbering() -> None:
    assert _visible_index(0, "3,1") == 3
    assert _visible_index(1, None) == 1
    with pytest.raises(ValueError):
        Monitor(0.0)
