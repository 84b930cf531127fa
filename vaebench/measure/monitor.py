"""The outside monitor: CPU per core, NVML and GPM on CUDA, sampled in a parent thread.

Everything here runs in the parent, so the training process pays nothing for it but the
CPU time the monitor thread takes on a shared core; `Monitor.overhead_s` reports that.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..result import MonitorSummary
from ..rules import NVML_UTIL_PERIOD_S, SAMPLE_HZ
from .gpm import GpmSampler, open_gpm
from .sched import TaskSampler

Clock = Callable[[], float]


def self_cpu_s() -> float:
    """CPU time of the calling thread; `getrusage(RUSAGE_THREAD)` only moves in scheduler ticks."""
    return time.thread_time()


class Nvml(Protocol):
    """The slice of pynvml the monitor uses; tests pass a fake."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int: ...
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int: ...


NVML_CLOCK_SM = 1


class GpuProbe:
    """Reads one GPU through NVML; each reading that the driver refuses becomes NaN."""

    def __init__(self, nvml: Nvml, index: int, visible: str | None = None, clock: Clock = time.monotonic) -> None:
        """`index` is the CUDA ordinal; `visible` the CUDA_VISIBLE_DEVICES that numbers it."""
        self.nvml = nvml
        self.gpm: GpmSampler | None = None
        nvml.nvmlInit()
        try:
            self.handle = _device_handle(nvml, index, visible)
        except Exception:
            self.close()
            raise
        self.gpm = open_gpm(nvml, self.handle, clock)  # Hopper and newer: SM activity and occupancy

    def read(self) -> dict[str, float]:
        """This instant's readings; the GPM keys only when a fresh GPM interval has closed."""
        nvml, handle = self.nvml, self.handle
        return self._read_gpm() | {
            "gpu_util": _try(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
            "gpu_mem_mb": _try(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20),
            "gpu_power_w": _try(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            "gpu_sm_clock_mhz": _try(lambda: float(nvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM))),
            "gpu_energy_mj": _try(lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))),
        }

    def _read_gpm(self) -> dict[str, float]:
        try:
            reading = self.gpm.read() if self.gpm is not None else None
        except Exception:  # noqa: BLE001 - an exception here would end the monitor thread
            reading = None
        if reading is None:
            return {}
        return {"gpu_sm_activity": reading.sm_activity_pct, "gpu_sm_occupancy": reading.sm_occupancy_pct}

    def close(self) -> None:
        if self.gpm is not None:
            self.gpm.close()
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass


def _try(read: Callable[[], float]) -> float:
    try:
        return read()
    except Exception:  # noqa: BLE001 - NVML raises its own error class per unsupported query
        return math.nan


def open_gpu_probe(device: str, nvml: Nvml | None = None) -> GpuProbe | None:
    """A probe for the NVML device behind `device` (cuda / cuda:N), or None without NVML."""
    if not device.startswith("cuda"):
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    try:
        if nvml is None:
            import pynvml as nvml_module

            nvml = nvml_module
        assert nvml is not None
        return GpuProbe(nvml, index, os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception:  # noqa: BLE001 - no driver, no library: the run goes on unmonitored
        return None


def _visible_id(index: int, visible: str | None) -> int | str:
    """The CUDA_VISIBLE_DEVICES entry behind CUDA ordinal `index`: an NVML index or a UUID."""
    ids = [part.strip() for part in (visible or "").split(",") if part.strip()]
    if index >= len(ids):
        return index
    return int(ids[index]) if ids[index].isdigit() else ids[index]


def _device_handle(nvml: Nvml, index: int, visible: str | None) -> Any:
    """NVML's handle for CUDA ordinal `index` (CUDA_DEVICE_ORDER=PCI_BUS_ID makes them agree)."""
    entry = _visible_id(index, visible)
    if isinstance(entry, int):
        return nvml.nvmlDeviceGetHandleByIndex(entry)
    if entry.startswith("GPU-"):
        handle = _handle_by_uuid(nvml, entry)
        if handle is not None:
            return handle
    # A MIG instance (MIG-...) or an id NVML does not know: the ordinal, which may name the parent GPU.
    return nvml.nvmlDeviceGetHandleByIndex(index)


def _handle_by_uuid(nvml: Nvml, uuid: str) -> Any | None:
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:  # noqa: BLE001 - NVML wants the whole UUID; CUDA also takes a unique prefix
        pass
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(uuid):
                return handle
    except Exception:  # noqa: BLE001 - the caller falls back to the ordinal
        pass
    return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# The neighbour figure differences cumulative CPU counters at the training window's ends, so
# they need not be read at the monitor's rate: every half second (and once more at the end)
# keeps their cost, about 0.4 ms a read with the process tree, to 0.1 % of a core.
COUNTERS_EVERY_S = 0.5


class ProcessTree:
    """CPU seconds used so far by a run's process tree: this process (the parent that measures)
    and, once `track`ed, the child with every process of its group (the child leads its own
    group: its DataLoader workers and anything else it starts that stays in it).

    Members are looked for at most every `refresh_s`: on Linux by the process group of each
    pid in /proc (0.1 ms), elsewhere by psutil's descendants (a full process scan, 1.4 ms).
    With `descendants` the scan also takes every descendant, whatever its group: torchrun
    starts each rank in a session of its own.
    A process that has ended keeps its last reading and the child's waited-for workers move
    into its `children_*` times; once the child itself has been waited for, this process's own
    `children_*` times hold the whole tree's total. So the sum never drops, and the last
    reading after the run is complete.
    """

    def __init__(self, refresh_s: float = 1.0, clock: Clock = time.monotonic, *, descendants: bool = False) -> None:
        self.refresh_s = refresh_s
        self.descendants = descendants
        self.clock = clock
        self.root: Any = None
        self.known: dict[int, Any] = {}
        self.last: dict[int, float] = {}
        self._scanned = -math.inf
        self._waited_before = 0.0

    def track(self, pid: int) -> None:
        import psutil

        try:
            self.root = psutil.Process(pid)
        except psutil.Error:
            return
        own = os.times()
        self._waited_before = own.children_user + own.children_system
        self.known[pid] = self.root
        self._scanned = -math.inf

    def cpu_s(self) -> float:
        import psutil

        if self.root is not None and self.clock() - self._scanned >= self.refresh_s:
            self._scanned = self.clock()
            for pid in _members(self.root, self.descendants):
                with contextlib.suppress(psutil.Error):
                    self.known.setdefault(pid, psutil.Process(pid))
        for pid, proc in list(self.known.items()):  # `track` may add one from the main thread
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue  # ended: its last reading stands
            waited = times.children_user + times.children_system if proc is self.root else 0.0
            self.last[pid] = times.user + times.system + waited
        own = os.times()  # the parent itself: the monitor thread, the wait loop
        waited = own.children_user + own.children_system - self._waited_before if self.root is not None else 0.0
        return own.user + own.system + max(sum(self.last.values()), waited)


def _members(root: Any, descendants: bool = False) -> list[int]:
    """The pids of `root`'s process group (Linux), and of its descendants (elsewhere, or asked)."""
    import psutil

    found: list[int] = []
    on_linux = os.path.isdir("/proc/self")
    if on_linux:
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(name)) == root.pid:
                        found.append(int(name))
    if descendants or not on_linux:
        with contextlib.suppress(psutil.Error):
            found += [proc.pid for proc in root.children(recursive=True)]
    return found


def machine_busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot, all cores (/proc/stat via psutil):
    user, nice, system, irq and softirq; guest time is already inside user and nice."""
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


class Monitor:
    """Samples CPU per core, the watched process's threads and, on CUDA, NVML at a fixed rate
    in a daemon thread.

    Every sample is kept with its timestamp (seconds since `start`). psutil's per-core
    figures are each the share of the interval since the previous call, so the first
    sample is taken to prime the counters and dropped. A sample that overruns its tick
    (NVML can be slow, in a sandbox especially) skips the ticks it missed. `watch(pid)`, called
    once the child exists, adds its threads' scheduler counters (`sched.TaskSampler`).
    """

    def __init__(
        self,
        interval_s: float = 1.0 / SAMPLE_HZ,
        gpu: GpuProbe | None = None,
        cpu_percent: Callable[[], list[float]] | None = None,
        clock: Clock = time.monotonic,
        cpu_energy: Callable[[], float | None] | None = None,
        tree: ProcessTree | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"sampling interval must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.gpu = gpu
        self.clock = clock
        self.cpu_energy = cpu_energy  # joules since start, e.g. rapl.EnergyMeter.sample
        # With a tree, each sample holds the machine's busy CPU seconds and the tree's: their
        # difference is the neighbours' (`summarize`'s neighbour_cpu_pct).
        self.tree = tree
        self._counted_at = -math.inf
        self.t0_unix = math.nan
        self.samples: list[dict[str, Any]] = []
        self.overhead_s = 0.0
        self._cpu_percent = cpu_percent or _psutil_per_core()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self.tasks: TaskSampler | None = None

    def watch(self, pid: int) -> None:
        """Sample this process's threads from now on (`run_child`'s `on_start`)."""
        self.tasks = TaskSampler(pid)

    def __enter__(self) -> Monitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._t0 = self.clock()
        self.t0_unix = time.time()
        self._cpu_percent()
        self._thread = threading.Thread(target=self._loop, name="vaebench-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.tree is not None:
                self.sample_once(counters=True)  # the CPU counters past the training window's end
        if self.gpu is not None:
            self.gpu.close()

    def sample_once(self, *, counters: bool = False) -> dict[str, Any]:
        """One sample; the CPU counters of the neighbour figure only every `COUNTERS_EVERY_S`
        (or when `counters` asks for them)."""
        cpu_before = self_cpu_s()
        cores = self._cpu_percent()
        sample: dict[str, Any] = {
            "t": self.clock() - self._t0,
            "cpu_util": statistics.fmean(cores) if cores else math.nan,
            "cpu_cores": cores,
        }
        tasks = self.tasks
        if tasks is not None:
            sample.update(tasks.read())
        if self.gpu is not None:
            sample.update(self.gpu.read())
        if self.cpu_energy is not None:
            joules = self.cpu_energy()
            if joules is not None:
                sample["cpu_energy_j"] = joules
        if self.tree is not None and (counters or sample["t"] - self._counted_at >= COUNTERS_EVERY_S):
            self._counted_at = sample["t"]
            sample["machine_cpu_s"] = machine_busy_cpu_s()
            sample["tree_cpu_s"] = self.tree.cpu_s()
        self.samples.append(sample)
        self.overhead_s += self_cpu_s() - cpu_before
        return sample

    def _loop(self) -> None:
        due = self.clock() + self.interval_s
        while not self._stop.wait(max(0.0, due - self.clock())):
            self.sample_once()
            due = next_tick(due, self.clock(), self.interval_s)

    def summary(
        self, train_start_unix: float = math.nan, train_end_unix: float = math.nan, settle_s: float = 0.0
    ) -> MonitorSummary:
        window = (train_start_unix - self.t0_unix, train_end_unix - self.t0_unix)
        note = self.tasks.note if self.tasks is not None else ""
        return summarize(self.samples, self.interval_s, window, sched_note=note, settle_s=settle_s)


def next_tick(due: float, now: float, interval_s: float) -> float:
    """The first tick after `now` on the grid through `due`: a slow sample skips the ticks it
    overran instead of firing them back to back (close samples would tell nothing new, and
    GPM and psutil need time between reads)."""
    overrun = max(0, math.floor((now - due) / interval_s))
    return due + (overrun + 1) * interval_s


def counter_at(samples: list[dict[str, Any]], key: str, t: float) -> float:
    """A cumulative counter at time t, linearly interpolated between the samples around it."""
    points = [(s["t"], s[key]) for s in samples if s.get(key) is not None and math.isfinite(s[key])]
    if len(points) < 2 or not math.isfinite(t) or not points[0][0] <= t <= points[-1][0]:
        return math.nan
    for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
        if t0 <= t <= t1:
            return float(v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0))
    return math.nan


def summarize(
    samples: list[dict[str, Any]],
    interval_s: float,
    window: tuple[float, float] = (math.nan, math.nan),
    sched_note: str = "",
    settle_s: float = 0.0,
) -> MonitorSummary:
    """The monitor's figures; `window` is the training's (start, end) in seconds of sample time.

    With a finite window, the utilization, power, clock, GPM and thread figures cover the
    samples inside it less its first `settle_s` seconds (see `window_values`): the first
    step, which holds compilation and CUDA-graph capture. So process start-up, compile and
    teardown do not dilute them (under max-autotune the first step is most of the window);
    without a window they cover every sample. Peak memory and the whole-child energy always
    cover every sample; the `_train_` energies and the run-queue wait interpolate their
    counters at the window's ends, first step included (without a window: first to last
    sample). Over a window shorter than `NVML_UTIL_PERIOD_S` the GPU's utilization and SM
    activity are NaN.
    """
    windowed = all(math.isfinite(edge) for edge in window)
    settled = (window[0] + settle_s if math.isfinite(settle_s) and 0 < settle_s < window[1] - window[0]
               else window[0], window[1])

    def column(name: str) -> list[float]:
        return window_values(samples, name, settled) if windowed else _values(samples, name)

    def mean(name: str) -> float:
        values = column(name)
        return statistics.fmean(values) if values else math.nan

    def peak(name: str) -> float:
        values = column(name)
        return max(values) if values else math.nan

    memory = _values(samples, "gpu_mem_mb")
    energy = _values(samples, "gpu_energy_mj")
    cpu_energy = _values(samples, "cpu_energy_j")

    def over_window(key: str, scale: float) -> float:
        return (counter_at(samples, key, window[1]) - counter_at(samples, key, window[0])) * scale

    # Utilization over a window shorter than NVML's period is mostly the idle time around it.
    too_short = windowed and settled[1] - settled[0] < NVML_UTIL_PERIOD_S

    def share(name: str, reduce: Callable[[str], float]) -> float:
        return math.nan if too_short else reduce(name)

    queued = _values(samples, "runqueue_s")
    if windowed:
        runqueue_s = over_window("runqueue_s", 1.0)
    else:
        runqueue_s = queued[-1] - queued[0] if len(queued) >= 2 else math.nan

    return MonitorSummary(
        monitor_samples=len(samples),
        interval_s=interval_s,
        cpu_util_mean=cpu_mean(column("cpu_util")),
        neighbour_cpu_pct=neighbour_cpu_pct(samples, window),
        gpu_util_mean=share("gpu_util", mean),
        gpu_util_max=share("gpu_util", peak),
        gpu_mem_max_mb=max(memory) if memory else math.nan,
        gpu_power_mean_w=mean("gpu_power_w"),
        gpu_sm_clock_mean_mhz=mean("gpu_sm_clock_mhz"),
        gpu_sm_activity_mean=share("gpu_sm_activity", mean),
        gpu_sm_occupancy_mean=share("gpu_sm_occupancy", mean),
        gpu_energy_j=(energy[-1] - energy[0]) / 1000.0 if len(energy) >= 2 else math.nan,
        cpu_energy_j=cpu_energy[-1] - cpu_energy[0] if len(cpu_energy) >= 2 else math.nan,
        gpu_energy_train_j=over_window("gpu_energy_mj", 1e-3),
        cpu_energy_train_j=over_window("cpu_energy_j", 1.0),
        runqueue_wait_s=runqueue_s,
        os_threads_max=peak("os_threads"),
        runnable_max=peak("runnable"),
        runnable_mean=mean("runnable"),
        sched_note=sched_note,
    )


def neighbour_cpu_pct(samples: list[dict[str, Any]], window: tuple[float, float]) -> float:
    """Percent of one core that processes outside the run's tree used over `window`: the
    machine's busy CPU seconds less the tree's, over the window's length. NaN without a window
    or where the machine's counters do not move (gVisor's /proc/stat reads zeros). Counter
    ticks (10 ms) make a small negative possible on a quiet machine: it reads as 0."""
    start, end = window
    if not (math.isfinite(start) and math.isfinite(end)) or not end > start:
        return math.nan
    machine = counter_at(samples, "machine_cpu_s", end) - counter_at(samples, "machine_cpu_s", start)
    tree = counter_at(samples, "tree_cpu_s", end) - counter_at(samples, "tree_cpu_s", start)
    if not math.isfinite(machine) or not math.isfinite(tree) or machine <= 0:
        return math.nan
    return outside_pct(machine, tree, end - start)


def outside_pct(machine_cpu_s: float, own_cpu_s: float, wall_s: float) -> float:
    """CPU seconds the machine spent outside one's own processes, in percent of one core over
    `wall_s`; a small negative from the counters' 10 ms ticks reads as 0."""
    return 100.0 * max(machine_cpu_s - own_cpu_s, 0.0) / wall_s


def window_values(samples: list[dict[str, Any]], key: str, window: tuple[float, float]) -> list[float]:
    """`key` at the samples whose `t` lies in `window`; if none does, at the first one after its start.

    A sample describes the interval before it (psutil and GPM since the previous read, NVML
    utilization over its own last period), so for a window shorter than the sampling
    interval the first sample after its start is the one whose interval holds it. Should the
    window begin after the last sample, the last sample is the nearest.
    """
    start, end = window
    timed = [(s["t"], s[key]) for s in samples if _present(s.get(key))]
    inside = [value for t, value in timed if start <= t <= end]
    if inside:
        return inside
    after = [value for t, value in timed if t >= start]
    return after[:1] or [value for _, value in timed[-1:]]


def cpu_mean(values: list[float]) -> float:
    """Mean CPU utilization, NaN where every sample is exactly zero.

    While the child trains some core is busy, so all zeros mean the counters do not move:
    gVisor's /proc/stat reads all zeros, and psutil then reports 0% on every core.
    """
    if not values or all(value == 0.0 for value in values):
        return math.nan
    return statistics.fmean(values)


def _values(samples: list[dict[str, Any]], key: str) -> list[float]:
    return [s[key] for s in samples if _present(s.get(key))]


def _present(value: Any) -> bool:
    return value is not None and not math.isnan(value)


def _psutil_per_core() -> Callable[[], list[float]]:
    import psutil

    return lambda: list(psutil.cpu_percent(interval=None, percpu=True))
