from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from vaebench.measure.monitor import GpuProbe, Monitor, _device_handle, _visible_id, next_tick, summarize
from vaebench.measure.process import run_child
from vaebench.rules import NVML_UTIL_PERIOD_S

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


def test_the_childs_exit_ends_the_wait_without_a_polling_delay() -> None:
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd here: the wait sleeps its poll interval")
    # A 30 s poll interval: only the exit itself can end the wait in time.
    exit_ = run_child(["true"], env={"PATH": "/usr/bin:/bin"}, timeout=120, poll_s=30)
    assert exit_.usage.exit_code == 0 and exit_.usage.real_s < 10


def test_without_pidfds_the_wait_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "pidfd_open", lambda pid: (_ for _ in ()).throw(OSError(38, "not implemented")),
                        raising=False)
    exit_ = run_child(["true"], env={"PATH": "/usr/bin:/bin"}, poll_s=0.01)
    assert exit_.usage.exit_code == 0 and not exit_.timed_out


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
    assert _visible_id(0, "3,1") == 3
    assert _visible_id(1, None) == 1
    assert _visible_id(0, "GPU-abc, 2") == "GPU-abc"
    assert _visible_id(4, "3,1") == 4
    with pytest.raises(ValueError):
        Monitor(0.0)


class UuidNvml:
    """Two GPUs known by UUID; a MIG UUID, like an unknown one, is refused by the lookup."""

    UUIDS = ("GPU-1111-aaaa", "GPU-2222-bbbb")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.UUIDS)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if index >= len(self.UUIDS):
            raise RuntimeError("NVML_ERROR_INVALID_ARGUMENT")
        return f"handle{index}"

    def nvmlDeviceGetUUID(self, handle: str) -> bytes:
        return self.UUIDS[int(handle[-1])].encode()

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.UUIDS:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return f"handle{self.UUIDS.index(uuid)}"


def test_nvml_handle_follows_uuids_in_cuda_visible_devices() -> None:
    nvml = UuidNvml()
    assert _device_handle(nvml, 0, "GPU-2222-bbbb,GPU-1111-aaaa") == "handle1"
    assert _device_handle(nvml, 1, "GPU-2222-bbbb,GPU-1111-aaaa") == "handle0"
    assert _device_handle(nvml, 0, "GPU-2222") == "handle1"  # CUDA takes a unique prefix too
    assert _device_handle(nvml, 0, "1,0") == "handle1"
    # MIG instances and unknown UUIDs fall back to the CUDA ordinal instead of failing.
    assert _device_handle(nvml, 0, "MIG-9999-cccc") == "handle0"
    assert _device_handle(nvml, 1, "GPU-dead,GPU-beef") == "handle1"


def test_a_gpu_probe_nvml_cannot_find_is_none_not_a_crash() -> None:
    from vaebench.measure.monitor import open_gpu_probe

    class Missing(UuidNvml):
        shut = False

        def nvmlInit(self) -> None: ...

        def nvmlShutdown(self) -> None:
            self.shut = True

    nvml = Missing()
    assert open_gpu_probe("cuda:5", nvml=nvml) is None  # type: ignore[arg-type]
    assert nvml.shut


WILD = 1000.0  # outside the window every reading is absurd, so any leak shows


def wild_samples() -> list[dict[str, float]]:
    """Start-up (t < 2), training (2 <= t <= 3) and teardown (t > 3), sampled every 0.25 s."""
    samples = []
    for i in range(25):
        t = i * 0.25
        inside = 2.0 <= t <= 3.0
        sample = {
            "t": t,
            "cpu_util": 40.0 if inside else WILD,
            "gpu_util": 60.0 + (t - 2.0) * 8 if inside else WILD,
            "gpu_power_w": 300.0 if inside else WILD,
            "gpu_sm_clock_mhz": 1980.0 if inside else WILD,
            "gpu_mem_mb": 900.0 if t < 5 else 4000.0,  # the peak comes after training
            "gpu_energy_mj": 1000.0 * t,
        }
        if i % 2 == 0:  # GPM only every other sample, as at 10 Hz with a 200 ms floor
            sample |= {"gpu_sm_activity": 20.0 if inside else WILD, "gpu_sm_occupancy": 5.0 if inside else WILD}
        samples.append(sample)
    return samples


def test_means_cover_the_training_window_only() -> None:
    summary = summarize(wild_samples(), 0.25, window=(1.9, 3.1))
    assert summary.cpu_util_mean == 40.0
    assert summary.gpu_util_mean == pytest.approx(64.0) and summary.gpu_util_max == pytest.approx(68.0)
    assert summary.gpu_power_mean_w == 300.0 and summary.gpu_sm_clock_mean_mhz == 1980.0
    assert summary.gpu_sm_activity_mean == 20.0 and summary.gpu_sm_occupancy_mean == 5.0
    assert summary.gpu_mem_max_mb == 4000.0  # memory stays whole-run
    assert summary.gpu_energy_j == pytest.approx(6.0)  # whole child: 0 .. 6 s
    assert summary.gpu_energy_train_j == pytest.approx(1.2)  # 1.9 .. 3.1 s
    assert summarize(wild_samples(), 0.25).gpu_util_mean > 500  # no window: every sample


def test_means_skip_the_first_step_that_compiled_and_energy_keeps_it() -> None:
    # The H200's --adam compiled rung: 5.9 s of a 7.1 s window compiling, the GPU idle, so
    # the whole window read 12% where the steady training read 80%.
    samples = [{"t": 0.25 * i, "gpu_util": 80.0 if i * 0.25 > 1.5 else 0.0, "cpu_util": 50.0,
                "gpu_energy_mj": 1000.0 * i * 0.25} for i in range(17)]
    compiled = summarize(samples, 0.25, window=(0.0, 4.0), settle_s=1.6)
    assert compiled.gpu_util_mean == 80.0 and compiled.gpu_util_max == 80.0
    assert compiled.gpu_energy_train_j == pytest.approx(4.0)  # the whole window: compile costs energy too
    assert summarize(samples, 0.25, window=(0.0, 4.0)).gpu_util_mean < 80.0 * 0.7
    assert summarize(samples, 0.25, window=(0.0, 4.0), settle_s=math.nan).gpu_util_mean < 80.0 * 0.7
    # A first step that is most of the window leaves under NVML's period: unknown, not diluted.
    assert math.isnan(summarize(samples, 0.25, window=(0.0, 4.0), settle_s=3.5).gpu_util_mean)


LEASE_4 = Path(__file__).parents[2] / "docs/examples/nvidia-h200/lease-4"


@pytest.mark.parametrize(("run_id", "whole", "settled"), [
    ("20261127T101234-17824176", 11.9, 70.2),  # --adam compiled: 5.9 s compile in a 7.1 s window
    ("20261127T101257-66e9be2a", 1.8, 17.1),  # max-autotune: 204 s first step in 215 s
    ("20261127T101223-5f6abf2a", 82.9, 82.9),  # --cuda-graphs: a 10 ms first step changes nothing
])
def test_the_h200_rungs_nvml_figures_over_the_steps_after_the_first(run_id: str, whole: float, settled: float) -> None:
    records = [json.loads(line) for line in (LEASE_4 / "runs.jsonl").read_text().splitlines()]
    record = next(r for r in records if r["run_id"] == run_id)
    series = json.loads((LEASE_4 / "series" / f"{run_id}.json").read_text())
    t0 = series["monitor_t0_unix"]
    window = (record["train_start_unix"] - t0, record["train_end_unix"] - t0)
    assert summarize(series["monitor"], record["interval_s"], window).gpu_util_mean == pytest.approx(whole, abs=0.05)
    assert record["gpu_util_mean"] == pytest.approx(whole, abs=0.05)  # what the run recorded at b761250
    steady = summarize(series["monitor"], record["interval_s"], window, settle_s=record["t_first_step_s"])
    assert steady.gpu_util_mean == pytest.approx(settled, abs=0.05)


def test_a_window_shorter_than_the_interval_takes_the_next_sample_not_the_whole_run() -> None:
    summary = summarize(wild_samples(), 0.25, window=(2.05, 2.2))
    assert summary.cpu_util_mean == 40.0 and summary.gpu_power_mean_w == 300.0  # the sample at 2.25 s
    late = summarize(wild_samples()[:8], 0.25, window=(2.05, 2.2))  # the monitor stopped at 1.75 s
    assert late.gpu_power_mean_w == WILD and late.monitor_samples == 8


def test_utilization_over_a_window_shorter_than_nvml_s_period_is_unknown_not_diluted() -> None:
    short = summarize(wild_samples(), 0.25, window=(2.05, 2.2))  # 0.15 s of training
    assert math.isnan(short.gpu_util_mean) and math.isnan(short.gpu_util_max)
    assert math.isnan(short.gpu_sm_activity_mean) and math.isnan(short.gpu_sm_occupancy_mean)
    assert short.gpu_power_mean_w == 300.0
    whole = summarize(wild_samples(), 0.25, window=(2.0, 2.0 + NVML_UTIL_PERIOD_S))
    assert whole.gpu_util_mean == pytest.approx(64.0) and whole.gpu_sm_activity_mean == 20.0


def test_cpu_utilization_all_zero_is_unknown_not_idle() -> None:
    samples = [{"t": 0.1 * i, "cpu_util": 0.0} for i in range(10)]  # gVisor's /proc/stat: zeros
    assert math.isnan(summarize(samples, 0.1).cpu_util_mean)
    assert math.isnan(summarize(samples, 0.1, window=(0.2, 0.6)).cpu_util_mean)
    samples[3]["cpu_util"] = 12.0
    assert summarize(samples, 0.1).cpu_util_mean == pytest.approx(1.2)


def test_a_slow_sample_skips_the_ticks_it_overran() -> None:
    assert next_tick(1.0, 1.02, 0.1) == pytest.approx(1.1)
    assert next_tick(1.0, 1.35, 0.1) == pytest.approx(1.4)
    assert next_tick(1.0, 0.99, 0.1) == pytest.approx(1.1)


class FakeClockStop:
    """Stands in for the monitor's stop event: waiting moves the fake clock, N waits then stop."""

    def __init__(self, clock: list[float], waits: int) -> None:
        self.clock, self.waits = clock, waits

    def wait(self, timeout: float) -> bool:
        self.clock[0] += timeout
        self.waits -= 1
        return self.waits < 0


def test_monitor_loop_never_fires_back_to_back_after_a_slow_sample() -> None:
    now = [0.0]
    durations = iter([0.01, 0.35, 0.01, 0.01, 0.23, 0.01, 0.01, 0.01])
    starts: list[float] = []

    def slow_cpu_percent() -> list[float]:
        starts.append(now[0])
        now[0] += next(durations)
        return [10.0]

    monitor = Monitor(0.1, cpu_percent=slow_cpu_percent, clock=lambda: now[0])
    monitor._stop = FakeClockStop(now, waits=8)  # type: ignore[assignment]
    monitor._loop()
    assert len(monitor.samples) == 8
    # On the 0.1 s grid throughout; a slow sample skips the ticks it overran instead of
    # firing them back to back.
    assert [round(t, 2) for t in starts] == [0.1, 0.2, 0.6, 0.7, 0.8, 1.1, 1.2, 1.3]


class GpmNvml(FakeNvml):
    """FakeNvml with GPM whose SMs are always half busy; counts nvmlGpmSampleGet calls."""

    class NVMLError(Exception):
        pass

    NVML_SUCCESS = 0
    NVML_GPM_METRICS_GET_VERSION = 1
    NVML_GPM_METRIC_SM_UTIL = 2
    NVML_GPM_METRIC_SM_OCCUPANCY = 3

    def __init__(self) -> None:
        super().__init__()
        self.util = iter(range(1000))
        self.gets = 0

    def nvmlGpmQueryDeviceSupport(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(isSupportedDevice=1)

    def nvmlGpmSampleAlloc(self) -> SimpleNamespace:
        return SimpleNamespace()

    def nvmlGpmSampleFree(self, sample: SimpleNamespace) -> None: ...

    def nvmlGpmSampleGet(self, handle: int, sample: SimpleNamespace) -> SimpleNamespace:
        self.gets += 1
        return sample

    def c_nvmlGpmMetricsGet_t(self) -> SimpleNamespace:
        return SimpleNamespace(metrics=[SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(2)])

    def nvmlGpmMetricsGet(self, request: SimpleNamespace) -> SimpleNamespace:
        for metric in request.metrics:
            metric.value = 50.0
        return request


def test_monitor_at_10_hz_reads_gpm_at_most_every_200_ms() -> None:
    import random

    rng = random.Random(0)
    now = [0.0]
    nvml = GpmNvml()
    probe = GpuProbe(nvml, 0, clock=lambda: now[0])
    monitor = Monitor(0.1, gpu=probe, cpu_percent=lambda: [1.0], clock=lambda: now[0])
    assert monitor.gpu is not None and monitor.gpu.gpm is not None and nvml.gets == 1
    monitor._t0 = 0.0
    for tick in range(1, 31):
        now[0] = 0.1 * tick + rng.uniform(0.0, 0.004)  # the thread wakes a little late
        monitor.sample_once()
    gpm_times = [0.0] + [s["t"] for s in monitor.samples if "gpu_sm_activity" in s]
    assert nvml.gets == len(gpm_times)  # a sample without a fresh reading lacks the keys
    assert min(b - a for a, b in zip(gpm_times, gpm_times[1:], strict=False)) >= 0.2
    assert 10 <= len(gpm_times) - 1 <= 15  # every 200-300 ms over 3 s
    assert all("gpu_util" in s for s in monitor.samples)
    assert all(s["gpu_sm_activity"] == pytest.approx(50.0) for s in monitor.samples if "gpu_sm_activity" in s)


def neighbour_samples(busy_per_s: float = 1.5, tree_per_s: float = 1.0) -> list[dict[str, float]]:
    """Cumulative CPU counters every 0.5 s: the machine busy `busy_per_s` cores, the run's tree
    `tree_per_s` of them; before 1 s and after 4 s the neighbour is idle (set-up, teardown)."""
    samples = []
    for i in range(11):
        t = 0.5 * i
        inside = min(max(t, 1.0), 4.0) - 1.0
        samples.append({"t": t, "cpu_util": 50.0, "tree_cpu_s": tree_per_s * t,
                        "machine_cpu_s": tree_per_s * t + (busy_per_s - tree_per_s) * inside})
    return samples


def test_neighbour_cpu_is_the_machine_s_cpu_outside_the_run_s_tree_over_the_training_window() -> None:
    assert summarize(neighbour_samples(), 0.5, window=(1.0, 4.0)).neighbour_cpu_pct == pytest.approx(50.0)
    assert summarize(neighbour_samples(), 0.5, window=(1.25, 2.75)).neighbour_cpu_pct == pytest.approx(50.0)
    assert summarize(neighbour_samples(1.0), 0.5, window=(1.0, 4.0)).neighbour_cpu_pct == pytest.approx(0.0)
    assert math.isnan(summarize(neighbour_samples(), 0.5).neighbour_cpu_pct)  # no window: unknown
    zeros = [dict(s, machine_cpu_s=0.0) for s in neighbour_samples()]  # gVisor's /proc/stat
    assert math.isnan(summarize(zeros, 0.5, window=(1.0, 4.0)).neighbour_cpu_pct)


def test_the_process_tree_counts_the_child_and_its_workers() -> None:
    from vaebench.measure.monitor import ProcessTree

    tree = ProcessTree(refresh_s=0.0)
    with Monitor(0.05, cpu_percent=lambda: [1.0], tree=tree) as monitor:
        exit_ = run_child([sys.executable, "-c", BURN], env={"PATH": "/usr/bin:/bin"}, on_start=tree.track)
    counted = [s for s in monitor.samples if "tree_cpu_s" in s]
    used = [s["tree_cpu_s"] for s in counted]
    assert exit_.usage.exit_code == 0
    # Two workers burn 0.6 s each; the last reading, after the child was waited for, has it all.
    assert used[-1] - used[0] >= 1.1 and used == sorted(used)
    assert all(s["machine_cpu_s"] >= 0 for s in counted)
    assert 2 <= len(counted) < len(monitor.samples)  # the counters are read every half second, and at the end
