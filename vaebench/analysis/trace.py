"""What a torch.profiler Chrome trace says: busy fraction, kernels per step, top operators.

Pure analysis of the JSON that `export_chrome_trace` writes (Chrome/Perfetto trace event
format), so saved traces can be re-read without torch. Times in the file are microseconds.

Which events make the device busy: kernels, memcpys and memsets (`DEVICE_BUSY_CATS`). A copy
occupies the copy engine rather than the SMs, but during it the device is doing the run's
work, which is the question a busy fraction answers; `kernel_fraction` keeps kernels alone,
the figure that is comparable to NVML's utilization.gpu. `gpu_user_annotation` spans and
`cuda_sync` waits also sit on device rows and are not work, so they never count.

On a CPU run's trace there is no device row: the CPU is the device, and the busy fraction is
the share of wall time the main thread spent inside aten operators. The rest is Python,
the dispatcher's gaps and the data loader's own Python code. A CUDA run's trace without
device rows is another matter: CUPTI, which records them, did not work (a sandbox such as
gVisor without its CUDA profiling support). Its busy fraction is NaN with a warning, never
the aten-op share, which measures the host and would read as a busy GPU.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEVICE_BUSY_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
KERNEL_CAT = "kernel"
CPU_OP_CAT = "cpu_op"
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
LAUNCH_NAMES = frozenset(
    {
        "cudaLaunchKernel",
        "cudaLaunchKernelExC",
        "cudaLaunchCooperativeKernel",
        "cuLaunchKernel",
        "cuLaunchKernelEx",
        "cudaGraphLaunch",
    }
)
STEP_PATTERN = re.compile(r"^ProfilerStep#(\d+)$")
DEVICE_SOURCE = "trace: union of kernel, memcpy and memset time / wall"
CPU_SOURCE = "trace: union of aten op time on the main thread / wall (CPU run: no device rows)"
NO_DEVICE_ROWS = (
    "the trace had no GPU activity (no kernel, memcpy or memset rows: CUPTI missing?), "
    "so the GPU's busy fraction is unknown"
)
NO_DEVICE_SOURCE = f"trace: {NO_DEVICE_ROWS}"
UNATTRIBUTED = "<no cpu op>"

Interval = tuple[float, float]


@dataclass(frozen=True)
class Trace:
    """The complete (`ph == "X"`) events of one trace; everything else is dropped at load."""

    events: tuple[dict[str, Any], ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | list[dict[str, Any]]) -> Trace:
        raw = data if isinstance(data, list) else data.get("traceEvents", [])
        return cls(tuple(e for e in raw if e.get("ph") == "X" and "dur" in e))

    def of(self, *cats: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("cat") in cats]

    @property
    def has_device(self) -> bool:
        return any(e.get("cat") in DEVICE_BUSY_CATS for e in self.events)

    @property
    def has_launches(self) -> bool:
        """CUDA runtime or driver calls were recorded: the run used a GPU."""
        return any(e.get("cat") in LAUNCH_CATS for e in self.events)


def load(path: str | Path) -> Trace:
    """Read a `.json` or `.json.gz` trace."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return Trace.from_dict(json.load(f))


def span(event: Mapping[str, Any]) -> Interval:
    start = float(event["ts"])
    return start, start + float(event["dur"])


def union_length(intervals: Iterable[Interval]) -> float:
    """Total length covered by `intervals`, counting overlaps once; empty ones add nothing."""
    total = 0.0
    current_start = current_end = -math.inf
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if start > current_end:
            if current_end > current_start:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end > current_start:
        total += current_end - current_start
    return total


def clip(intervals: Iterable[Interval], window: Interval) -> list[Interval]:
    low, high = window
    return [(max(s, low), min(e, high)) for s, e in intervals if e > low and s < high]


@dataclass(frozen=True)
class StepWindow:
    step: int  # N of ProfilerStep#N
    start_us: float
    end_us: float
    thread: tuple[Any, Any]  # (pid, tid) of the thread that ran the step

    @property
    def wall_ms(self) -> float:
        return (self.end_us - self.start_us) / 1e3


def step_windows(trace: Trace) -> list[StepWindow]:
    """The ProfilerStep#N spans, in step order: the loop's steps inside the active window."""
    steps = []
    for e in trace.events:
        match = STEP_PATTERN.match(str(e.get("name", "")))
        if match and e.get("cat") != "gpu_user_annotation":
            start, end = span(e)
            steps.append(StepWindow(int(match.group(1)), start, end, (e.get("pid"), e.get("tid"))))
    return sorted(steps, key=lambda s: s.step)


def from_device_rows(source: str) -> bool:
    """Whether a recorded busy source is the device's own kernel and copy time, the one
    busy figure that says how long a GPU worked (not the host's aten-op share)."""
    return source == DEVICE_SOURCE


def expects_device(device: str | None, trace: Trace) -> bool:
    """A CUDA run's trace should hold device rows; `device` None: judge by its launch calls."""
    if device is None:
        return trace.has_launches
    return device.startswith("cuda")


@dataclass(frozen=True)
class Busy:
    """A busy fraction and where it came from; `kind` is the device it describes."""

    fraction: float
    busy_ms: float
    wall_ms: float
    kind: str  # "device" or "cpu"
    source: str
    kernel_fraction: float = math.nan  # kernels alone, the NVML-comparable figure; device only
    warning: str = ""  # why the fraction is NaN on a run that should have had one

    def __str__(self) -> str:
        if self.warning:
            return f"busy unknown: {self.warning}"
        return f"{100 * self.fraction:.1f}% busy ({self.source})"


def busy_fraction(trace: Trace, device: str | None = None) -> Busy:
    """Busy share of the wall window of the profiled steps; see the module docstring.

    `device` is the run's (cpu, cuda, cuda:N); None infers a GPU run from launch calls."""
    steps = step_windows(trace)
    if not trace.has_device and expects_device(device, trace):
        window = _window(trace, steps, [])
        return Busy(
            fraction=math.nan,
            busy_ms=math.nan,
            wall_ms=(window[1] - window[0]) / 1e3,
            kind="device",
            source=NO_DEVICE_SOURCE,
            warning=NO_DEVICE_ROWS,
        )
    if trace.has_device:
        busy = [span(e) for e in trace.of(*DEVICE_BUSY_CATS)]
        window = _window(trace, steps, busy)
        kernels = [span(e) for e in trace.of(KERNEL_CAT)]
        return _busy(busy, window, "device", DEVICE_SOURCE, kernels)
    thread = main_thread(trace, steps)
    ops = [span(e) for e in trace.of(CPU_OP_CAT) if (e.get("pid"), e.get("tid")) == thread]
    return _busy(ops, _window(trace, steps, []), "cpu", CPU_SOURCE)


def _busy(
    spans: list[Interval], window: Interval, kind: str, source: str, kernels: list[Interval] | None = None
) -> Busy:
    """The union of `spans` inside `window` over its length; `kernels` alone as well, on a GPU."""
    wall = window[1] - window[0]

    def share(of: list[Interval]) -> float:
        return union_length(clip(of, window)) / wall if wall > 0 else math.nan

    return Busy(
        fraction=share(spans),
        busy_ms=union_length(clip(spans, window)) / 1e3,
        wall_ms=wall / 1e3,
        kind=kind,
        source=source,
        kernel_fraction=share(kernels) if kernels is not None else math.nan,
    )


def _window(trace: Trace, steps: list[StepWindow], busy: list[Interval]) -> Interval:
    # Device work lags the host, so the window runs on to the end of the last device
    # interval that started inside the steps; it never starts before the first step.
    if steps:
        start = steps[0].start_us
        end = max(s.end_us for s in steps)
        tails = [e for s, e in busy if start <= s < end]
        return start, max([end, *tails])
    spans = [span(e) for e in trace.events]
    if not spans:
        return 0.0, 0.0
    return min(s for s, _ in spans), max(e for _, e in spans)


def main_thread(trace: Trace, steps: list[StepWindow] | None = None) -> tuple[Any, Any]:
    """The thread that ran ProfilerStep#N, else the one with the most aten op time."""
    steps = step_windows(trace) if steps is None else steps
    if steps:
        return steps[0].thread
    per_thread: dict[tuple[Any, Any], float] = defaultdict(float)
    for e in trace.of(CPU_OP_CAT):
        per_thread[(e.get("pid"), e.get("tid"))] += float(e["dur"])
    return max(per_thread, key=lambda t: per_thread[t]) if per_thread else (None, None)


@dataclass(frozen=True)
class StepKernels:
    """What one profiled step launched. `ops` counts aten calls at every nesting level."""

    step: int
    wall_ms: float
    kernels: int  # device kernels (not copies) launched from this step
    launches: int  # host launch calls; a CUDA graph launch starts many kernels at once
    ops: int


def kernels_per_step(trace: Trace) -> list[StepKernels]:
    """Per ProfilerStep: kernels, launch calls and aten ops.

    A kernel belongs to the step whose host launch call (matched by CUPTI correlation id)
    falls inside it, since kernels often run after their step's host span has ended; a
    kernel without a matching launch is placed by its own start time.
    """
    steps = step_windows(trace)
    if not steps:
        return []

    def step_of(ts: float) -> int | None:
        for s in steps:
            if s.start_us <= ts < s.end_us:
                return s.step
        return None

    launch_step: dict[Any, int | None] = {}
    launches: dict[int, int] = defaultdict(int)
    for e in trace.of(*LAUNCH_CATS):
        where = step_of(float(e["ts"]))
        correlation = e.get("args", {}).get("correlation")
        if correlation is not None:
            launch_step[correlation] = where
        if where is not None and e.get("name") in LAUNCH_NAMES:
            launches[where] += 1
    kernels: dict[int, int] = defaultdict(int)
    for e in trace.of(KERNEL_CAT):
        correlation = e.get("args", {}).get("correlation")
        if correlation in launch_step:
            where = launch_step[correlation]
        else:
            where = step_of(float(e["ts"]))
        if where is not None:
            kernels[where] += 1
    ops: dict[int, int] = defaultdict(int)
    for e in trace.of(CPU_OP_CAT):
        where = step_of(float(e["ts"]))
        if where is not None:
            ops[where] += 1
    return [
        StepKernels(s.step, s.wall_ms, kernels[s.step], launches[s.step], ops[s.step])
        for s in steps
    ]


@dataclass(frozen=True)
class OpRow:
    """One aten operator summed over the trace. Device time is that of the kernels, copies
    and memsets it launched itself (not through the ops it called)."""

    name: str
    calls: int
    self_cpu_ms: float
    cpu_total_ms: float
    device_ms: float


def op_table(trace: Trace) -> list[OpRow]:
    """Every operator, unsorted. Self CPU time is the op's span less its direct children's."""
    calls: dict[str, int] = defaultdict(int)
    self_us: dict[str, float] = defaultdict(float)
    total_us: dict[str, float] = defaultdict(float)
    device_us: dict[str, float] = defaultdict(float)
    by_external: dict[Any, str] = {}
    per_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for e in trace.of(CPU_OP_CAT):
        per_thread[(e.get("pid"), e.get("tid"))].append(e)
        external = e.get("args", {}).get("External id")
        if external is not None:
            by_external[external] = e["name"]
    for events in per_thread.values():
        for name, own, dur in _self_times(events):
            calls[name] += 1
            self_us[name] += own
            total_us[name] += dur
    for e in trace.of(*DEVICE_BUSY_CATS):
        owner = by_external.get(e.get("args", {}).get("External id"), UNATTRIBUTED)
        device_us[owner] += float(e["dur"])
    names = set(calls) | set(device_us)
    return [
        OpRow(n, calls[n], self_us[n] / 1e3, total_us[n] / 1e3, device_us[n] / 1e3) for n in names
    ]


def _self_times(events: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    # Ops on one thread nest properly; a stack of open spans finds each one's parent.
    ordered = sorted(events, key=lambda e: (float(e["ts"]), -float(e["dur"])))
    children_us = [0.0] * len(ordered)
    stack: list[tuple[int, float]] = []  # (index, end)
    for i, e in enumerate(ordered):
        start, end = span(e)
        while stack and stack[-1][1] <= start:
            stack.pop()
        if stack:
            children_us[stack[-1][0]] += end - start
        stack.append((i, end))
    return [
        (e["name"], max(float(e["dur"]) - children_us[i], 0.0), float(e["dur"]))
        for i, e in enumerate(ordered)
    ]


def top_ops(trace: Trace, n: int = 10, by: str = "cpu") -> list[OpRow]:
    """The `n` operators with the most self CPU time (`by="cpu"`) or device time."""
    if by not in ("cpu", "device"):
        raise ValueError(f"by must be 'cpu' or 'device', got {by!r}")
    rows = op_table(trace)
    if by == "device":
        rows = [r for r in rows if r.device_ms > 0]
    key = (lambda r: r.self_cpu_ms) if by == "cpu" else (lambda r: r.device_ms)
    return sorted(rows, key=key, reverse=True)[:n]


def format_ops(rows: Iterable[OpRow], name_width: int = 48) -> str:
    header = ("operator", "calls", "self CPU ms", "CPU total ms", "device ms")
    lines = ["{:<{w}} {:>7} {:>12} {:>13} {:>10}".format(*header, w=name_width)]
    for r in rows:
        name = r.name if len(r.name) <= name_width else r.name[: name_width - 1] + "…"
        cells = (name, r.calls, r.self_cpu_ms, r.cpu_total_ms, r.device_ms)
        lines.append("{:<{w}} {:>7} {:>12.3f} {:>13.3f} {:>10.3f}".format(*cells, w=name_width))
    return "\n".join(lines)


BLOCKS_PER_SM = "blocks per SM"  # CUPTI's launch figure in a kernel's args: grid blocks / the GPU's SMs


def underfilled_share(trace: Trace) -> float:
    """The share of kernel time spent in kernels launched with fewer blocks than the GPU has
    SMs: while one runs the GPU counts as busy (to NVML and to the busy fraction), but most
    of its SMs have nothing to do. NaN without kernels that carry the launch figure."""
    known = [(float(e["dur"]), e.get("args", {}).get(BLOCKS_PER_SM)) for e in trace.of(KERNEL_CAT)]
    timed = [(dur, blocks) for dur, blocks in known if isinstance(blocks, int | float)]
    total = sum(dur for dur, _ in timed)
    return sum(dur for dur, blocks in timed if blocks < 1) / total if total > 0 else math.nan


@dataclass(frozen=True)
class TraceSummary:
    busy: Busy
    steps: tuple[StepKernels, ...]
    top_cpu: tuple[OpRow, ...]
    top_device: tuple[OpRow, ...]
    underfilled: float = math.nan  # `underfilled_share`

    @property
    def kernels_per_step(self) -> float:
        """Median over the profiled steps; NaN without steps or without the device rows of a
        GPU run (a count of 0 would be false), 0 on a CPU run."""
        if not self.steps or self.busy.warning:
            return math.nan
        return statistics.median(s.kernels for s in self.steps)

    @property
    def launches_per_step(self) -> float:
        if not self.steps or self.busy.warning:
            return math.nan
        return statistics.median(s.launches for s in self.steps)

    @property
    def ops_per_step(self) -> float:
        return statistics.median(s.ops for s in self.steps) if self.steps else math.nan


def summarize(
    trace: Trace, top: int = 10, last_step: int | None = None, device: str | None = None
) -> TraceSummary:
    """Everything above in one record; `last_step` drops later ProfilerStep#N spans (a
    profiler stopped early closes an empty one); `device` as for `busy_fraction`."""
    steps = kernels_per_step(trace)
    if last_step is not None:
        steps = [s for s in steps if s.step <= last_step]
    return TraceSummary(
        busy=busy_fraction(trace, device),
        steps=tuple(steps),
        top_cpu=tuple(top_ops(trace, top, by="cpu")),
        top_device=tuple(top_ops(trace, top, by="device")),
        underfilled=underfilled_share(trace),
    )
