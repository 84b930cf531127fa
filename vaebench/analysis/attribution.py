"""What bounds a run, from its step split and its trace, and which knobs address it.

Pure rules on numbers the run already measured. The split is the host's view of a step:
`data` waiting for a batch, `copy` the host-to-device copy, `compute` the host running (on a
GPU: launching) forward, backward and optimizer, `sync` the host blocked in `loss.item()`
while the device catches up. The busy fraction (from a trace) says whether the device was
the one working meanwhile; on a GPU the trace's device rows measure that, and their time
per step is set against the unprofiled step, since the profiler slows the host. The host's
aten-op share (what a CPU run's trace gives) does not, nor do an eager run's CUDA events:
their copy-to-end stream time includes every gap in which the GPU waited for the host to
launch. A `--cuda-graphs` step has no such gaps (its kernels are queued at once, as one graph),
so there the events bound the device's work per step from above, without a trace.
A measured what-if (a rerun with one knob changed) outranks the rules: when one sped the
run up clearly, it names the bottleneck.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..result import StepSplit
from ..rules import INPUT_BAND, INPUT_BOUND_SHARE, contended
from ..spec import RunSpec
from ..stats import number
from .trace import NO_DEVICE_ROWS, NO_DEVICE_SOURCE, from_device_rows

INPUT = "input pipeline"
LAUNCH = "host launch overhead"
COMPUTE = "compute"
SYNC = "synchronization"
ALLREDUCE = "gradient all-reduce"

KNOBS: dict[str, tuple[str, ...]] = {
    INPUT: ("--loader tensor|device", "--workers N", "--pin-memory"),
    LAUNCH: (
        "--cuda-graphs with --sync epoch, without --compile (the whole step, Adam included, as one graph)",
        "--compile reduce-overhead (CUDA graphs)",
        "--compile default (fewer, fused kernels)",
        "--adam fused (one optimizer kernel)",
        "a larger --batch-size",
    ),
    COMPUTE: ("--amp bf16", "a larger --batch-size", "--compile default"),
    SYNC: ("fewer .item() syncs: keep the running loss on the device and read it once per epoch",),
    ALLREDUCE: ("a larger --batch-size (fewer all-reduces per sample)", "fewer ranks (--nproc-per-node)"),
}
CPU_KNOBS: dict[str, tuple[str, ...]] = {
    INPUT: ("--loader tensor", "--workers N"),
    LAUNCH: ("--compile default (less Python and dispatch per op)", "--adam fused (one optimizer op)",
             "a larger --batch-size"),
    COMPUTE: ("--threads N", "--amp bf16", "--compile default"),
    SYNC: KNOBS[SYNC],
    ALLREDUCE: KNOBS[ALLREDUCE],
}
# Refused beside more than one rank (spec._rank_problems): never advised to a data-parallel run.
NOT_WITH_RANKS = ("--compile", "--cuda-graphs", "--adam compiled")
# The flag of each knob that addresses one bottleneck only; a what-if on it names that one.
WHATIF_FLAGS: dict[str, str] = {
    "--loader": INPUT,
    "--workers": INPUT,
    "--pin-memory": INPUT,
    "--amp": COMPUTE,
    "--threads": COMPUTE,
}

GRAPH_ADAM = "--adam compiled (inductor's Adam kernels inside the graph)"
DEVICE_BUSY = 0.80  # device busy at or above this: the device's own work bounds the step
UNDERFILLED = 0.50  # kernel time in grids smaller than the GPU at or above this: "busy" is mostly empty SMs
CPU_OP_BUSY = 0.50  # CPU run: aten ops below this share of wall, Python and dispatch dominate
SYNC_SHARE = 0.25  # host work and sync wait both at or above this: host and device take turns
ALLREDUCE_SHARE = 0.30  # the gradients' all-reduce at or above this share of the step bounds a data-parallel run
DECISIVE_WHATIF = 1.20  # a what-if this much faster outranks the rules
FP16_SYNC = (
    "with fp16, GradScaler.step syncs the host a second time (found_inf.item()) and the split "
    "counts that wait as compute: compute is overstated, sync understated"
)


def share_of_step(busy_ms: float, step_ms: float) -> float:
    """Device work per step over the unprofiled step, at most 1 (work queued past a step's end
    is still one step's); NaN where either is unknown."""
    share = busy_ms / step_ms if step_ms > 0 else math.nan
    return min(1.0, share) if math.isfinite(share) else math.nan


# Evidence's numbers, each from the record column of that name (a configuration's: its median).
EVIDENCE_COLUMNS = {
    "busy_fraction": "profile_busy_fraction",
    "busy_ms_per_step": "profile_busy_ms_per_step",
    "step_median_ms": "step_median_ms",
    "underfilled_share": "profile_underfilled_share",
    "kernels_per_step": "profile_kernels_per_step",
    "gpu_util_pct": "gpu_util_mean",
    "allreduce_share": "allreduce_share",
    "neighbour_cpu_pct": "neighbour_cpu_pct",
}


@dataclass(frozen=True)
class Evidence:
    split: StepSplit
    device: str  # cpu, cuda, cuda:N, mps
    busy_fraction: float = math.nan  # from the trace; on a CPU run the aten-op share
    busy_source: str = ""  # the record's profile_busy_source; "" trusts busy_fraction as given
    busy_ms_per_step: float = math.nan  # the trace's busy time per profiled step
    step_median_ms: float = math.nan  # the run's own median step, unprofiled (on a graphed run: the device's)
    underfilled_share: float = math.nan  # of kernel time, in kernels with fewer blocks than SMs
    kernels_per_step: float = math.nan
    gpu_util_pct: float = math.nan  # NVML utilization.gpu, mean over the run
    allreduce_share: float = math.nan  # several ranks: the gradients' all-reduce over the median step
    neighbour_cpu_pct: float = math.nan  # CPU used outside the run while it trained, percent of a core
    whatifs: Mapping[str, float] = field(default_factory=dict)  # knob -> measured speed-up
    spec: RunSpec | None = None  # the run's settings: knobs it already uses are not advised again

    @classmethod
    def from_columns(cls, get: Callable[[str], Any], spec: RunSpec,
                     whatifs: Mapping[str, float] | None = None) -> Evidence:
        """The evidence in a record's columns (docs/columns.md), `get(name)` reading one: a run's
        row when it is recorded, or a configuration's medians in the report, so both judge alike."""
        split = StepSplit(*(number(get(f"split_{field.name}")) for field in dataclasses.fields(StepSplit)))
        measured = {name: number(get(column)) for name, column in EVIDENCE_COLUMNS.items()}
        return cls(split=split, device=spec.device, busy_source=str(get("profile_busy_source") or ""),
                   whatifs=whatifs or {}, spec=spec, **measured)

    @property
    def amp(self) -> str:
        """The run's autocast mode, "" when its settings are unknown: fp16 adds a sync that the
        split misplaces."""
        return self.spec.amp if self.spec is not None else ""

    @property
    def on_gpu(self) -> bool:
        return not self.device.startswith("cpu")

    @property
    def graphed(self) -> bool:
        return self.on_gpu and self.spec is not None and self.spec.cuda_graphs

    @property
    def busy(self) -> float:
        """The busy fraction these rules may use; NaN where nothing measured it."""
        return self._busy_reading()[0]

    def _busy_reading(self) -> tuple[float, str]:
        """The busy fraction and where it came from, the best reading first. On a CPU run: the
        trace's aten-op share. On a GPU run, never a host op share: the trace's device time per
        step over the unprofiled step (the profiler slows the host, a graph launch by ~0.1 ms,
        not the kernels); else, on a graphed run, the CUDA events' stream time per step; else the
        trace's busy share of the profiled steps' wall time."""
        if not self.on_gpu:
            return self.busy_fraction, "wall"
        trusted = not self.busy_source or from_device_rows(self.busy_source)
        readings = (
            (self.unprofiled_busy if trusted else math.nan, "trace"),
            (self.graph_busy, "graph"),
            (self.busy_fraction if trusted else math.nan, "wall"),
        )
        return next(((share, how) for share, how in readings if math.isfinite(share)), (math.nan, ""))

    @property
    def period_ms(self) -> float:
        """The unprofiled step: the run's median where known, else the host split's sum."""
        return self.step_median_ms if self.step_median_ms > 0 else self.step_ms

    @property
    def unprofiled_busy(self) -> float:
        """The trace's device time per step over the unprofiled step; NaN off a GPU or unknown."""
        return share_of_step(self.busy_ms_per_step, self.period_ms) if self.on_gpu else math.nan

    @property
    def graph_ms(self) -> float:
        """A graphed step's stream time from its start to its end (copy, then graph), by CUDA events."""
        copy = self.split.device_copy_ms if math.isfinite(self.split.device_copy_ms) else 0.0
        return copy + self.split.device_compute_ms

    @property
    def graph_busy(self) -> float:
        """A graphed run's stream time per step over the step; NaN for any other run. An upper
        bound: it includes the host's call between the copy and the graph's launch."""
        return share_of_step(self.graph_ms, self.period_ms) if self.graphed else math.nan

    def busy_text(self, *, idle: bool = False) -> str:
        """How busy (or idle) the device was, in words, with where the figure came from."""
        share, how = self._busy_reading()
        state, share = ("idle", 1 - share) if idle else ("busy", share)
        if how == "trace":
            return (f"the device is {state} {100 * share:.0f}% of the step (the trace's "
                    f"{self.busy_ms_per_step:.3f} ms of device work per step in a {self.period_ms:.3f} ms "
                    "unprofiled step)")
        if how == "graph":
            bound = "at least" if idle else "at most"
            return (f"the device is {state} {bound} {100 * share:.0f}% of the step (CUDA events: the step's "
                    f"graph holds the stream {self.graph_ms:.3f} ms of each {self.period_ms:.3f} ms step; "
                    "queued at once, it has no launch gaps inside)")
        return f"the device is {state} {100 * share:.0f}% of the wall time"

    @property
    def step_ms(self) -> float:
        parts = [self.split.data_ms, self.split.copy_ms, self.split.compute_ms, self.split.sync_ms]
        return sum(p for p in parts if math.isfinite(p))

    def share(self, *ms: float) -> float:
        step = self.step_ms
        return sum(m for m in ms if math.isfinite(m)) / step if step > 0 else math.nan


@dataclass(frozen=True)
class Bottleneck:
    kind: str  # INPUT, LAUNCH, COMPUTE, SYNC or ALLREDUCE
    share: float  # of the step time the bounding part takes
    evidence: tuple[str, ...]
    knobs: tuple[str, ...]
    whatif: str = ""  # the measured what-if that backs it, if any
    set_already: tuple[str, ...] = ()  # knobs for it that the run already uses

    def __str__(self) -> str:
        text = f"bound by {self.kind}: " + "; ".join(self.evidence)
        if self.whatif:
            text += f"; measured: {self.whatif}"
        text += ". Knobs: " + (", ".join(self.knobs) if self.knobs else "none left") + "."
        if self.set_already:
            text += " Already set: " + ", ".join(self.set_already) + "."
        return text


def attribute(ev: Evidence) -> Bottleneck:
    """Name what bounds the run; see the module docstring for what the split parts mean."""
    kind, share, why = _rule(ev)
    other = None  # a second verdict as likely as `kind`, its knobs listed too
    measured = {k: v for k, v in ev.whatifs.items() if math.isfinite(v)}
    decisive = {k: v for k, v in measured.items() if _flag_kind(k) and v >= DECISIVE_WHATIF}
    best_kind = _flag_kind(max(decisive, key=lambda k: decisive[k])) if decisive else None
    if best_kind and best_kind != kind:
        why = [f"the rules pointed to {kind}", *why]
        kind, share = best_kind, _share_of(ev, best_kind)
    elif not best_kind:  # no measurement settles it
        other, line = _on_the_line(ev, kind)
        why += [line] if other else []
    catalogue = KNOBS if ev.on_gpu else CPU_KNOBS
    both = catalogue[kind] + (catalogue[other] if other else ())
    knobs, set_already = _open_knobs(tuple(dict.fromkeys(both)), ev.spec)
    # A knob measured slower than the run backs nothing: it is no reason to turn it.
    backing = {k: v for k, v in measured.items() if v > 1 and _flag(k) and _flag(k) in " ".join(knobs)}
    whatif = ", ".join(
        f"{k} ran {v:.2f}x as fast" for k, v in sorted(backing.items(), key=lambda kv: -kv[1])
    )
    return Bottleneck(kind, share, tuple(why) + _context(ev), knobs, whatif, set_already)


def _open_knobs(knobs: tuple[str, ...], spec: RunSpec | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The knobs still open to the run, and those it already uses (unknown settings: all open)."""
    if spec is None:
        return knobs, ()
    open_, used = [], []
    for knob in knobs:
        if spec.cuda_graphs and knob.startswith("--compile default"):  # refused with the graphs
            knob = GRAPH_ADAM
        if spec.world_size > 1 and knob.startswith(NOT_WITH_RANKS):
            continue
        if spec.amp == "fp16" and knob.startswith("--cuda-graphs"):  # refused: the GradScaler reads the host
            continue
        setting = _in_effect(knob, spec)
        if setting:
            used += [setting] if setting not in used else []
        elif knob == "--loader tensor|device" and spec.loader == "tensor":
            open_.append("--loader device")
        else:
            open_.append(knob)
    return tuple(open_), tuple(used)


def _on_the_line(ev: Evidence, kind: str) -> tuple[str | None, str]:
    """The verdict the rules would give were the input share a little to the other side of its cut,
    where that differs from `kind` (a rerun may name it), and the sentence that says so."""
    readings = {_rule(ev, INPUT_BOUND_SHARE + side * INPUT_BAND)[0] for side in (-1, 1)}
    other = next((k for k in readings if k != kind), None)
    if other is None:
        return None, ""
    return other, (f"on the line between {kind} and {other}: the wait for input is within "
                   f"{100 * INPUT_BAND:.0f} points of the {100 * INPUT_BOUND_SHARE:.0f}% of the step that names the "
                   "input pipeline, so a rerun may name the other; the knobs of both are listed")


def _rule(ev: Evidence, input_cut: float = INPUT_BOUND_SHARE) -> tuple[str, float, list[str]]:
    s = ev.split
    input_share = ev.share(s.data_ms, s.copy_ms)
    host_share = ev.share(s.compute_ms)
    sync_share = ev.share(s.sync_ms)
    busy = ev.busy
    split = (  # means over the steady steps, so the parts add up; samples/s is the median step's
        f"mean step {ev.step_ms:.2f} ms = data {s.data_ms:.2f} + copy {s.copy_ms:.2f} + "
        f"host compute {s.compute_ms:.2f} + sync {s.sync_ms:.2f}"
    )
    if ev.graphed and ev.step_median_ms > 0:  # the graph's period is the device's, the split the host's
        split = f"median step {ev.step_median_ms:.2f} ms on the device; the host's {split}"
    if ev.on_gpu and math.isfinite(busy) and busy >= DEVICE_BUSY:  # the host's waits hide behind its work
        return COMPUTE, busy, [split, ev.busy_text()]
    if ev.allreduce_share >= ALLREDUCE_SHARE:
        why = (f"the all-reduce of the gradients across ranks takes {100 * ev.allreduce_share:.0f}% of the step "
               "(counted in host compute)")
        return ALLREDUCE, ev.allreduce_share, [split, why]
    if input_share >= input_cut:
        why = f"waiting for input is {100 * input_share:.0f}% of the step"
        return INPUT, input_share, [split, why]
    if not ev.on_gpu:
        if math.isfinite(busy) and busy < CPU_OP_BUSY:
            why = (
                f"aten ops run only {100 * busy:.0f}% of the wall time; "
                "the rest is Python and dispatch"
            )
            return LAUNCH, 1 - busy, [split, why]
        return COMPUTE, host_share, [split, f"host compute is {100 * host_share:.0f}% of the step"]
    if host_share >= SYNC_SHARE and sync_share >= SYNC_SHARE:
        why = (
            f"the host launches for {100 * host_share:.0f}% of the step, then waits "
            f"{100 * sync_share:.0f}% in loss.item(): host and device take turns, not overlapping"
        )
        return SYNC, sync_share, [split, why]
    if math.isfinite(busy) or host_share >= sync_share:
        reasons = [split, f"the host spends {100 * host_share:.0f}% of the step launching work"]
        if math.isfinite(busy):
            reasons.append(ev.busy_text(idle=True))
        return LAUNCH, host_share, reasons
    why = f"the host waits for the device {100 * sync_share:.0f}% of the step (no trace to check)"
    return COMPUTE, sync_share, [split, why]


def _context(ev: Evidence) -> tuple[str, ...]:
    out = []
    if contended(ev.neighbour_cpu_pct):
        out.append(f"measured beside a busy neighbour (processes outside the run used {ev.neighbour_cpu_pct:.0f}% "
                   "of a core): the split may be the neighbour's doing, so rerun on a quiet machine before acting")
    if ev.on_gpu and ev.busy_source == NO_DEVICE_SOURCE:
        out.append(NO_DEVICE_ROWS)
    elif ev.on_gpu and ev.busy_source and not from_device_rows(ev.busy_source):
        out.append("the trace's busy figure is the host's aten-op share, not the GPU's, so it was not used")
    if math.isfinite(ev.kernels_per_step) and ev.on_gpu:
        per_kernel = ev.period_ms / ev.kernels_per_step if ev.kernels_per_step else math.nan
        out.append(
            f"{ev.kernels_per_step:g} kernels per step ({per_kernel * 1e3:.0f} us of step each)"
        )
    if math.isfinite(ev.gpu_util_pct):
        out.append(f"NVML utilization.gpu {ev.gpu_util_pct:.0f}% (share of time any kernel ran)")
    if ev.on_gpu and ev.underfilled_share >= UNDERFILLED:
        out.append(
            f"{100 * ev.underfilled_share:.0f}% of the kernel time ran kernels with fewer thread blocks "
            "than the GPU has SMs: busy by NVML's count and the trace's, with most SMs empty"
        )
    if ev.amp == "fp16" and ev.on_gpu:
        out.append(FP16_SYNC)
    return tuple(out)


def _in_effect(knob: str, spec: RunSpec) -> str:
    """The run's own setting that already does what `knob` would, as its flag; "" if none."""
    flag = _flag(knob)
    if flag == "--loader":
        done = spec.loader == "device" or (knob == "--loader tensor" and spec.loader == "tensor")
        return _flag_of(spec, "loader") if done else ""
    if flag == "--workers":  # the reference loader's knob (more may still help): the others have none
        return _flag_of(spec, "loader") if spec.loader != "reference" else ""
    if flag == "--pin-memory":
        if spec.pin_memory:
            return _flag_of(spec, "pin_memory")
        return _flag_of(spec, "loader") if spec.loader == "device" else ""
    if flag == "--cuda-graphs":
        return _flag_of(spec, "cuda_graphs") if spec.cuda_graphs else ""
    if knob.startswith("--compile reduce-overhead"):
        if spec.cuda_graphs:
            return _flag_of(spec, "cuda_graphs")
        # torch's max-autotune mode captures CUDA graphs as reduce-overhead does
        return _flag_of(spec, "compile") if spec.compile in ("reduce-overhead", "max-autotune") else ""
    if knob == GRAPH_ADAM:
        return _flag_of(spec, "adam") if spec.adam == "compiled" else ""
    if flag == "--adam":  # fused or compiled, asked for or (auto) chosen by --cuda-graphs
        if spec.adam_impl not in ("fused", "compiled"):
            return ""
        return _flag_of(spec, "adam") if spec.adam != "auto" else _flag_of(spec, "cuda_graphs")
    if flag in ("--compile", "--amp"):
        name = flag[2:]
        return _flag_of(spec, name) if getattr(spec, name) != "off" else ""
    return ""


def _flag_of(spec: RunSpec, name: str) -> str:
    """A setting of the run as its command-line flag: `--loader device`, `--cuda-graphs`."""
    flag = "--" + name.replace("_", "-")
    value = getattr(spec, name)
    return flag if value is True else f"{flag} {value}"


def _flag(knob: str) -> str:
    return knob.split()[0].split("=")[0] if knob.strip() else ""


def _flag_kind(knob: str) -> str | None:
    return WHATIF_FLAGS.get(_flag(knob))


def _share_of(ev: Evidence, kind: str) -> float:
    s = ev.split
    if kind == INPUT:
        return ev.share(s.data_ms, s.copy_ms)
    if kind == SYNC:
        return ev.share(s.sync_ms)
    if kind == ALLREDUCE:
        return ev.allreduce_share
    if kind == COMPUTE and ev.on_gpu and math.isfinite(ev.busy):
        return ev.busy
    return ev.share(s.compute_ms)


def utilization_note(gpu_util_pct: float, busy_fraction: float = math.nan) -> str:
    """The caveat to print wherever NVML's utilization.gpu appears."""
    note = (
        f"NVML utilization.gpu {gpu_util_pct:.0f}% is the share of time at least one kernel "
        "ran, not how much of the GPU the kernels used: a one-thread kernel running all the "
        "time reads 100%. Do not read it as compute efficiency; see model FLOP/s against peak."
    )
    if math.isfinite(busy_fraction):
        busy = 100 * busy_fraction
        note += f" The trace's busy fraction (union of kernel, memcpy and memset time / wall) is {busy:.0f}%."
    return note
