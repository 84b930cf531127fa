"""What the measurements say about the blog's comparison, as sentences built from records.

Pure functions of result rows (mappings with `load_runs` columns): no torch, no I/O, no text
that does not come with its numbers. Each returns `Finding`s, or None where the rows cannot
show the thing (a GPU split without a GPU run, thread scaling from one thread count).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..analysis import kernel
from ..analysis.attribution import FP16_SYNC, share_of_step
from ..analysis.trace import NO_DEVICE_ROWS, NO_DEVICE_SOURCE, from_device_rows
from ..rules import INPUT_BAND, INPUT_BOUND_SHARE, NEIGHBOUR_LIMIT_PCT, contended
from ..spec import DEFAULT, SPEED_KNOBS, RunSpec
from ..stats import is_missing, number

Row = Mapping[str, Any]

# sys growing this many times faster than user from the fewest to the most threads is the
# signature of threads waiting in the kernel; below it, one run's noise could explain it.
SYS_FASTER = 1.25
SYS_FASTER_BAND = 0.15  # a ratio this near SYS_FASTER is on the line: identical sweeps read one 1.08, 1.26, 1.39
# sys at half of user or more is a cost worth a sentence of its own (the blog's CPU: 2.17).
SYS_HEAVY = 0.5
HOST_PARTS = (("data", "data wait"), ("copy", "copy to the device"), ("compute", "compute"),
              ("sync", "waiting for the device"))
# Other processes using this share of the machine's CPU during a run make its times unreliable.
CONTENDED = 25.0
# How a measured fingerprint field differs from a published one, and why it could matter.
MACHINE_WHY = {
    "logical_cores": "torch's default thread count follows the cores, and kernel (sys) time can grow with threads",
    "cpu_model": "the CPU's speed sets the CPU run's compute and the GPU run's data pipeline",
    "gpu_name": "the GPU's kernel and launch speed set the GPU run's compute",
    "torch": "torch versions change kernels, the OpenMP thread pool and the DataLoader",
}
MACHINE_NAMES = {"logical_cores": "cores", "cpu_model": "CPU", "gpu_name": "GPU", "torch": "torch"}


@dataclass(frozen=True)
class Finding:
    topic: str  # step-split, threads, what-if, pipeline, machine
    text: str
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class WhatIf:
    """A short run of one change against the seed configuration, same device, same length."""

    device: str
    change: str  # e.g. loader=device, compile=reduce-overhead
    epoch_s: float
    speedup: float  # the seed configuration's epoch time over this one's: above 1 is faster
    samples_per_s: float
    steady_speedup: float  # steady-state samples/s over the seed configuration's
    compile_s: float = math.nan
    knobs: tuple[str, ...] = ()  # the run fields this what-if changes
    compute_ms: float = math.nan  # mean host compute per step (the step split's)
    neighbour_cpu_pct: float = math.nan  # processes outside the run, percent of a core, while it trained
    base_neighbour_cpu_pct: float = math.nan  # the same during the seed configuration's run it is set against
    runs: int = 1  # the runs of this change its figures are medians of (`median_run`)

    @property
    def busy(self) -> str:
        """Whose neighbours were busy (`busy_beside`), this run's or its baseline's; empty if neither."""
        return busy_beside([("seed configuration", self.base_neighbour_cpu_pct),
                            (self.change, self.neighbour_cpu_pct)])


def busy_beside(sides: Sequence[tuple[str, float]]) -> str:
    """`other processes used 119% of a core during the seed configuration run and 35% during the
    loader=tensor run`: the runs among `sides` (a label and the run's `neighbour_cpu_pct`) that
    `rules.contended` calls contended; empty where none is. Two such runs differ by more than
    the change between them, so a ratio of them says nothing about the change."""
    runs = [(label, pct) for label, pct in sides if contended(pct)]
    if not runs:
        return ""
    busy = [f"{pct:.0f}%{'' if i else ' of a core'} during the {label} run" for i, (label, pct) in enumerate(runs)]
    listed = busy[0] if len(busy) == 1 else ", ".join(busy[:-1]) + " and " + busy[-1]
    return f"other processes used {listed}, more than the {NEIGHBOUR_LIMIT_PCT:.0f}% a comparison allows"


def neighbours(row: Row) -> float:
    return number(row.get("neighbour_cpu_pct"))


def median_run(rows: Sequence[Row]) -> dict[str, Any]:
    """Repeats of one configuration as one row: the latest of `rows`, each number the runs differ on
    replaced by the median of those that have it (run fields, alike in every run, keep their value
    and type), and `runs` their count. A figure set against another is then a median a side, and a
    finding can say how many runs it rests on (`run_count`)."""
    out = dict(rows[-1])
    for key, value in out.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [v for r in rows if not math.isnan(v := number(r.get(key)))]
            if any(v != value for v in values):
                out[key] = statistics.median(values)
    return out | {"runs": len(rows)}


def run_count(row: Row) -> int:
    """The runs a row's figures are medians of (`median_run`); a record is one."""
    runs = number(row.get("runs"))
    return int(runs) if runs >= 1 else 1


def _evidence(runs: Sequence[int]) -> str:
    """`one run each`, `medians of 3 runs each`, or `a median of 3 runs and one run`, side by side."""
    if len(set(runs)) == 1:
        return "one run each" if runs[0] == 1 else f"medians of {runs[0]} runs each"
    return " and ".join("one run" if n == 1 else f"a median of {n} runs" for n in runs)


def _rerun(runs: Sequence[int]) -> str:
    """What a figure on the line of its cut can say, by the runs a side it rests on: where a side
    has one, that a rerun may read it on the other side; where each has repeats, too close to call."""
    if min(runs) == 1:
        return f"so on {_evidence(runs)} a rerun may read it on the other side"
    return f"too close to call even as {_evidence(runs)}"


def _of_repeats(runs: Sequence[int]) -> str:
    """`, medians of 3 runs each` where any side has repeats; nothing for one run each."""
    return f", {_evidence(runs)}" if max(runs) > 1 else ""


def step_split(row: Row) -> Finding | None:
    """Where one run's step time went on the host and, on a GPU, what says how busy the GPU was.

    The CUDA events time the stream from the start of the copy to the end of the step. For
    a launch-bound model that is mostly the GPU waiting for the host's next launch, so it is
    stream time, not busy time: busy comes only from the trace's device rows or from NVML."""
    parts = {name: number(row.get(f"split_{name}_ms")) for name, _ in HOST_PARTS}
    step = sum(v for v in parts.values() if not math.isnan(v))
    if not step > 0:
        return None
    device = str(row.get("device", "?"))
    shares = ", ".join(
        f"{label} {parts[name]:.2f} ms ({100 * parts[name] / step:.0f}%)"
        for name, label in HOST_PARTS if not math.isnan(parts[name])
    )
    numbers = {f"{name}_ms": value for name, value in parts.items()} | {"step_ms": step}
    text = f"On {device} a training step took {step:.2f} ms on the host (mean over its steps): {shares}."
    if device.startswith("cuda"):
        text += _gpu_busy(row, numbers)
    input_share = sum(0.0 if math.isnan(parts[k]) else parts[k] for k in ("data", "copy")) / step
    bound, near = input_share >= INPUT_BOUND_SHARE, abs(input_share - INPUT_BOUND_SHARE) < INPUT_BAND
    if bound or near:
        text += f" Waiting for the next batch and copying it is {100 * input_share:.0f}% of the step"
        text += ": input pipeline, not model" if bound else ""
        text += (f"{'; but' if bound else ','} within {100 * INPUT_BAND:.0f} points of the "
                 f"{100 * INPUT_BOUND_SHARE:.0f}% that names the input pipeline, so a rerun may read it on the "
                 "other side" if near else "") + "."
    busy = busy_beside([("measured", neighbours(row))])
    if busy:
        numbers["contended"] = 1.0
        text += f" The split may be the neighbours' doing: {busy}."
    return Finding("step-split", text, numbers)


def _unprofiled_busy(row: Row, numbers: dict[str, float]) -> str:
    """The trace's device time per step against the unprofiled step: the run's median step, or
    where a record lacks it the host split's sum (`numbers["step_ms"]`)."""
    busy_ms, median = number(row.get("profile_busy_ms_per_step")), number(row.get("step_median_ms"))
    step, which = (median, "median") if median > 0 else (numbers["step_ms"], "mean")
    share = share_of_step(busy_ms, step)
    if math.isnan(share):
        return ""
    numbers |= {"device_busy_ms": busy_ms, "gpu_busy_step_frac": share}
    return (f" Its {busy_ms:.3f} ms of device work per step fill {100 * share:.0f}% of the unprofiled "
            f"{step:.2f} ms {which} step: the profiler slows the host, not the kernels.")


def _graph_busy(row: Row, stream_ms: float, numbers: dict[str, float]) -> str:
    """A graphed step's stream time against its period: one graph, queued at once, has no launch
    gaps inside, so this bounds the device's work per step from above without a trace."""
    period = number(row.get("step_median_ms"))
    share = share_of_step(stream_ms, period)
    if math.isnan(share):
        return "."
    numbers["graph_busy_step_frac"] = share
    return (f": the step is one CUDA graph, queued at once, so no launch gaps lie inside that time, and the "
            f"device works at most {100 * share:.0f}% of the {period:.3f} ms median step.")


def _gpu_busy(row: Row, numbers: dict[str, float]) -> str:
    """The GPU sentences of `step_split`; fills `numbers` with what they quote."""
    text = ""
    copy, compute = number(row.get("split_device_copy_ms")), number(row.get("split_device_compute_ms"))
    if not math.isnan(compute):
        stream = compute + (0.0 if math.isnan(copy) else copy)
        numbers |= {"stream_copy_ms": copy, "stream_to_end_ms": compute, "stream_ms": stream}
        text += (f" CUDA events put {stream:.2f} ms per step on the stream from the copy to the step's end "
                 f"(copy {copy:.2f} ms, then {compute:.2f} ms)")
        text += _graph_busy(row, stream, numbers) if RunSpec.from_dict(row).cuda_graphs else (
            ": stream time, not busy time, since it includes every gap where the GPU waited for the host "
            "to launch the next kernel.")
    busy = number(row.get("profile_busy_fraction"))
    if from_device_rows(str(row.get("profile_busy_source") or "")) and not math.isnan(busy):
        numbers |= {"gpu_busy_frac": busy, "gpu_idle_frac": 1.0 - busy}
        text += (f" The profiler's trace had the GPU busy {100 * busy:.0f}% of the profiled steps' wall time "
                 f"(union of kernel, memcpy and memset time), idle {100 * (1 - busy):.0f}%.")
        text += _unprofiled_busy(row, numbers)
        underfilled = number(row.get("profile_underfilled_share"))
        if not math.isnan(underfilled):
            numbers["underfilled_frac"] = underfilled
            text += (f" {100 * underfilled:.0f}% of the kernel time went to kernels with fewer thread blocks "
                     "than the GPU has SMs, which count as busy while most SMs sit empty.")
    elif str(row.get("profile_busy_source") or "") == NO_DEVICE_SOURCE:
        text += f" The profiler ran, but {NO_DEVICE_ROWS}."
    util = number(row.get("gpu_util_mean"))
    if not math.isnan(util):
        numbers["gpu_util_mean"] = util
        text += (f" NVML utilization.gpu averaged {util:.0f}% (the share of time any kernel ran, "
                 "not how much of the GPU it used).")
    if "gpu_busy_frac" not in numbers and math.isnan(util):
        text += " Nothing here measured how busy the GPU was (--profile records its kernel time)."
    if row.get("amp") == "fp16":
        text += f" Caveat: {FP16_SYNC}."
    return text


def own_cpu_pct(row: Row) -> float:
    """The run's own CPU as a share of all cores, over the window the monitor's means cover:
    the training window (the child's own rusage there) when recorded, else the whole process."""
    cores = number(row.get("fp_logical_cores"))
    user, sys_, train = (number(row.get(k)) for k in ("train_user_s", "train_sys_s", "train_s"))
    if train > 0 and not math.isnan(user + sys_) and not number(row.get("workers")) > 0:
        return 100 * (user + sys_) / train / cores if cores > 0 else math.nan
    return number(row.get("cpu_pct")) / cores if cores > 0 else math.nan


def contention(rows: Sequence[Row]) -> Finding | None:
    """Whether other processes competed for the CPU: each run's `neighbour_cpu_pct` where recorded
    (the rule `rules.contended` applies); for older records, the outside monitor's mean use of all
    cores against the run's own use of them over the same window."""
    if any(not math.isnan(neighbours(r)) for r in rows):
        return _neighbour_contention(rows)
    worst, worst_row = -math.inf, None
    for row in rows:
        others = number(row.get("cpu_util_mean")) - own_cpu_pct(row)
        if others > worst:
            worst, worst_row = others, row
    if worst_row is None or worst < CONTENDED:
        return None
    machine = number(worst_row.get("cpu_util_mean"))
    text = (f"Other processes competed for the CPU: during the {worst_row.get('device')} run "
            f"({change_label(worst_row)}) the machine's cores were {machine:.0f}% busy while the run itself used "
            f"{machine - worst:.0f}% of them, so times here are inflated and their ratios noisy.")
    return Finding("contention", text, {"others_pct": worst})


def _neighbour_contention(rows: Sequence[Row]) -> Finding | None:
    busy = [r for r in rows if contended(neighbours(r))]
    if not busy:
        return None
    runs = ", ".join(f"{r.get('device')} {change_label(r)}{_epochs(r)} {neighbours(r):.0f}%" for r in busy)
    text = (f"Other processes competed for the CPU during {len(busy)} of {len(rows)} runs, using more than "
            f"{NEIGHBOUR_LIMIT_PCT:.0f}% of a core while they trained ({runs}): their times are inflated, and "
            "comparisons that involve them are withheld or marked below.")
    return Finding("contention", text, {"contended_runs": float(len(busy)),
                                        "neighbour_pct_max": max(neighbours(r) for r in busy)})


def _epochs(row: Row) -> str:
    epochs = number(row.get("epochs"))
    return "" if math.isnan(epochs) else f" ({epochs:.0f} epoch{'' if epochs == 1 else 's'})"


def thread_count(row: Row) -> int | None:
    """The intra-op threads a run used: its setting, else what torch reported in the child."""
    for key in ("threads", "fp_torch_threads"):
        value = number(row.get(key))
        if not math.isnan(value):
            return int(value)
    return None


def thread_scaling(rows: Sequence[Row]) -> Finding | None:
    """How user and sys time grew with threads on the CPU, and what that points to.

    Rows are runs of one configuration at different thread counts, of the same length. The
    sys/user ratio is what matters: OpenMP threads that finish their slice of a small op
    spin, yield and sleep in futex calls until the rest arrive, which is kernel time that
    grows with the thread count while the useful (user) work stays the same.
    """
    by_threads = {t: r for r in rows if (t := thread_count(r)) is not None and number(r.get("user_s")) > 0}
    if len(by_threads) < 2:
        return None
    low, high = min(by_threads), max(by_threads)
    a, b = by_threads[low], by_threads[high]
    user = (number(a["user_s"]), number(b["user_s"]))
    sys_ = (number(a["sys_s"]), number(b["sys_s"]))
    ratio = (sys_[0] / user[0], sys_[1] / user[1])
    user_growth, sys_growth = user[1] / user[0], sys_[1] / sys_[0] if sys_[0] > 0 else math.inf
    rate = (number(a.get("samples_per_s")), number(b.get("samples_per_s")))
    speedup = rate[1] / rate[0] if rate[0] > 0 else math.nan
    cores = int(number(b.get("fp_logical_cores"))) if not math.isnan(number(b.get("fp_logical_cores"))) else None
    runs = (run_count(a), run_count(b))
    numbers = {"threads_low": low, "threads_high": high, "sys_user_low": ratio[0], "sys_user_high": ratio[1],
               "user_growth": user_growth, "sys_growth": sys_growth, "speedup": speedup,
               "sys_outgrows_user": float(sys_growth >= SYS_FASTER * user_growth),
               "runs_low": runs[0], "runs_high": runs[1]}
    on = f" on {cores} cores" if cores else ""
    on += f" ({_evidence(runs)})" if max(runs) > 1 else ""
    text = (f"From {low} to {high} threads{on}, user time went {user[0]:.1f} -> {user[1]:.1f} s ({user_growth:.2f}x) "
            f"and sys {sys_[0]:.2f} -> {sys_[1]:.2f} s ({sys_growth:.2f}x), so sys/user went "
            f"{ratio[0]:.2f} -> {ratio[1]:.2f}")
    if not math.isnan(speedup):
        text += (f", while samples/s went {rate[0]:,.0f} -> {rate[1]:,.0f} ({speedup:.2f}x, "
                 f"{100 * speedup / (high / low):.0f}% of linear)")
    busy = busy_beside([(f"{low}-thread", neighbours(a)), (f"{high}-thread", neighbours(b))])
    if busy:
        numbers["contended"] = 1.0
        return Finding("threads", text + f". What the threads did is not read from this: {busy}.", numbers)
    text += ". " + _thread_verdict(numbers, ratio[1], cores, by_threads)
    return Finding("threads", text, numbers)


def _thread_verdict(numbers: dict[str, float], top_ratio: float, cores: int | None, by_threads: Mapping[int, Row]
                    ) -> str:
    over = sorted(t for t in by_threads if cores and t > cores)
    parts = []
    faster = numbers["sys_outgrows_user"] == 1.0
    if faster and top_ratio >= SYS_HEAVY:
        parts.append("sys grows faster than user and reaches a large share of it: threads spin-waiting and sleeping "
                     "in the kernel at OpenMP barriers, since each op is too small to split; fewer threads would cost "
                     "little speed")
    elif faster:
        parts.append(f"sys grows faster than user, the signature of threads spin-waiting at OpenMP barriers, but it "
                     f"stays at {top_ratio:.2f} of user here (the blog's 20-core CPU reached sys above user)")
    else:
        parts.append("sys does not grow faster than user, so up to this thread count there is no sign of "
                     "spin-waiting threads")
    waste = numbers["user_growth"] / numbers["speedup"] if numbers["speedup"] > 0 else math.nan
    if waste >= SYS_FASTER:
        numbers["cpu_per_sample_growth"] = waste
        parts.append(f"user time per sample grew {waste:.2f}x: the extra threads burn CPU without progress, "
                     "spinning in user space while they wait for each other or for a core")
    if over and cores:
        a, b = by_threads[min(by_threads)], by_threads[max(by_threads)]
        switches = (number(a.get("ctx_involuntary")), number(b.get("ctx_involuntary")))
        parts.append(f"{', '.join(map(str, over))} threads on {cores} cores is oversubscribed: threads queue for a "
                     f"core (involuntary context switches {switches[0]:,.0f} -> {switches[1]:,.0f})")
        numbers["oversubscribed"] = 1.0
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "." + _thread_lines(numbers, waste)


def near_cut(value: float, cut: float, band: float) -> bool:
    """Whether `value` lies within `band`, a share of `cut`, of `cut`: too close for the runs to settle."""
    return abs(value - cut) < band * cut


def _thread_lines(numbers: dict[str, float], waste: float) -> str:
    """A sentence for each of the thread verdict's ratios that lies within `SYS_FASTER_BAND` of its
    cut, named in `numbers` (`sys_outgrows_user_close`, `cpu_per_sample_close`)."""
    text = ""
    relative = numbers["sys_growth"] / numbers["user_growth"]
    if near_cut(relative, SYS_FASTER, SYS_FASTER_BAND):
        numbers["sys_outgrows_user_close"] = 1.0
        text += f" Sys grew {relative:.2f}x as fast as user, {_sys_line(numbers)}."
    if near_cut(waste, SYS_FASTER, SYS_FASTER_BAND):
        numbers["cpu_per_sample_close"] = 1.0
        text += (f" User time per sample grew {waste:.2f}x, within {100 * SYS_FASTER_BAND:.0f}% of the "
                 f"{SYS_FASTER:.2f}x past which the extra threads are read as wasted, {_rerun(_runs(numbers))}.")
    return text


def _runs(numbers: Mapping[str, float]) -> tuple[int, int]:
    return int(numbers.get("runs_low", 1)), int(numbers.get("runs_high", 1))


def _sys_line(numbers: Mapping[str, float]) -> str:
    return (f"within {100 * SYS_FASTER_BAND:.0f}% of the {SYS_FASTER:.2f}x that reads as threads waiting in the "
            f"kernel, {_rerun(_runs(numbers))}")


def cpu_time_balance(row: Row) -> Finding | None:
    """One CPU run's kernel time against its user time, for when there is no thread sweep."""
    user, sys_ = number(row.get("user_s")), number(row.get("sys_s"))
    if not user > 0 or math.isnan(sys_):
        return None
    threads, cores = thread_count(row), number(row.get("fp_logical_cores"))
    at = f" at {threads} threads" if threads else ""
    on = f" on {cores:.0f} cores" if not math.isnan(cores) else ""
    text = (f"The CPU run{at}{on} spent {sys_:.2f} s in the kernel against {user:.2f} s in user mode "
            f"(sys/user {sys_ / user:.2f}); how that ratio grows with threads needs the thread sweep "
            "(run without --quick).")
    return Finding("threads", text, {"sys_user": sys_ / user})


def what_ifs(rows: Sequence[Row], baselines: Mapping[str, Row]) -> list[WhatIf]:
    """Each change's speed-up on its device against that device's seed-configuration short run."""
    out = []
    for row in rows:
        device = str(row.get("device"))
        base = baselines.get(device)
        if base is None:
            continue
        epoch, base_epoch = number(row.get("epoch_s")), number(base.get("epoch_s"))
        rate, base_rate = number(row.get("samples_per_s")), number(base.get("samples_per_s"))
        out.append(WhatIf(
            device=device,
            change=change_label(row),
            epoch_s=epoch,
            speedup=base_epoch / epoch if epoch > 0 else math.nan,
            samples_per_s=rate,
            steady_speedup=rate / base_rate if base_rate > 0 else math.nan,
            compile_s=number(row.get("compile_s")),
            knobs=changed_knobs(row),
            compute_ms=number(row.get("split_compute_ms")),
            neighbour_cpu_pct=neighbours(row),
            base_neighbour_cpu_pct=neighbours(base),
            runs=run_count(row),
        ))
    return out


# The knobs a what-if may change, with the seed configuration's value of each.
SEED_PIPELINE = tuple((name, getattr(DEFAULT, name)) for name in SPEED_KNOBS)
INPUT_KNOBS = frozenset({"loader", "pin_memory"})  # what changes the input pipeline and nothing else


def changed_knobs(row: Row) -> tuple[str, ...]:
    return tuple(name for name, seed in SEED_PIPELINE if name in row and _differs(row[name], seed))


def change_label(row: Row) -> str:
    """What a run changes from the seed configuration's pipeline: `loader=device,sync=epoch`, ..."""
    parts = []
    for name in changed_knobs(row):
        value = row[name]
        parts.append(f"{name}={'on' if value is True else value}")
    return ",".join(parts) or "seed configuration"


def _differs(value: Any, seed: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(seed, bool):
        return bool(value) != seed
    return str(value) != str(seed)


def pipeline_share(whatifs: Sequence[WhatIf], baselines: Mapping[str, Row],
                   published_gpu_real_s: float = math.nan) -> list[Finding]:
    """How much of the seed configuration's epoch the input pipeline took, per device: the gain
    of the fastest change of the input pipeline alone (loader, pinned memory), but no more than
    the data wait and copy the seed configuration's step split measured, since a loader removes
    only those; the changes of the step itself (sync, CUDA graphs, compile) are listed after it
    with their own gains. Runs beside busy neighbours are not compared."""
    findings = []
    for device, base in baselines.items():
        loaders = [w for w in whatifs if w.device == device and w.knobs and set(w.knobs) <= INPUT_KNOBS
                   and w.epoch_s > 0]
        if not loaders:
            continue
        best = min(loaders, key=lambda w: w.epoch_s)
        base_epoch = number(base.get("epoch_s"))
        gain = 1.0 - best.epoch_s / base_epoch
        numbers = {"base_epoch_s": base_epoch, "best_epoch_s": best.epoch_s, "gain": gain}
        if best.busy:
            numbers["contended"] = 1.0
            text = (f"On {device} the input pipeline's share of the epoch is not estimated: {best.busy}, so "
                    f"{best.change}'s {best.speedup:.2f}x against the reference pipeline is not the loader's.")
        elif gain <= 0:
            numbers["share"] = gain
            text = (f"On {device} no loader beat the seed's reference pipeline ({best.change}: {best.epoch_s:.2f} s "
                    f"against {base_epoch:.2f} s per epoch): the input pipeline was not what cost time.")
        else:
            text = _input_share_text(device, best, base, numbers)
            share = numbers["share"]
            if device == "cpu" and published_gpu_real_s > 0 and not any(d.startswith("cuda") for d in baselines):
                text += (f" How much of the published GPU run's {published_gpu_real_s:.1f} s was the input pipeline "
                         "needs a GPU run here.")
            if device.startswith("cuda") and published_gpu_real_s > 0:
                numbers["published_pipeline_s"] = share * published_gpu_real_s
                text += (f" If the published GPU run's epochs split the same way, at most about "
                         f"{share * published_gpu_real_s:.0f} s of its {published_gpu_real_s:.1f} s went to the input "
                         "pipeline (its time includes start-up, which the share does not cover).")
        for w in (w for w in whatifs if w.device == device and not set(w.knobs) <= INPUT_KNOBS):
            compiled = f" (compile {w.compile_s:.1f} s included)" if w.compile_s > 0 else ""
            beside = f", not the change's alone: {w.busy}" if w.busy else ""
            text += (f" {w.change}: {w.speedup:.2f}x per epoch{compiled}, "
                     f"{w.steady_speedup:.2f}x in the steady state{beside}.")
        findings.append(Finding("pipeline", text, numbers))
    return findings


# Single runs vary by several percent: a loader's gain this far past the step split's input
# share is still read as the input pipeline's.
SHARE_SLACK = 0.05
SHARE_BAND = 0.05  # a gain this near the share allowed is on the line: repeats flipped under 2 points and at 4.5


def input_share(row: Row) -> float:
    """Data wait and copy over the whole step, from the run's step split; NaN without one."""
    parts = [number(row.get(f"split_{name}_ms")) for name, _ in HOST_PARTS]
    step = sum(v for v in parts if not math.isnan(v))
    waits = sum(v for v in parts[:2] if not math.isnan(v))
    return waits / step if step > 0 else math.nan


def _input_share_text(device: str, best: WhatIf, base: Row, numbers: dict[str, float]) -> str:
    """The share of the epoch that was the input pipeline, a faster loader's gain checked against
    the step split; fills `numbers["share"]` (and `input_share`, where there is a split)."""
    gain, runs = numbers["gain"], (best.runs, run_count(base))
    numbers |= {"runs": runs[0], "base_runs": runs[1]}
    text = (f"On {device}, {best.change} ran an epoch in {best.epoch_s:.2f} s against the reference "
            f"pipeline's {numbers['base_epoch_s']:.2f} s ({best.speedup:.2f}x{_of_repeats(runs)})")
    measured = input_share(base)
    if math.isnan(measured):
        numbers["share"] = gain
        return (text + f": up to {100 * gain:.0f}% of the seed configuration's epoch was the input pipeline (no "
                "step split to check it against).")
    numbers |= {"input_share": measured, "share": min(gain, measured)}
    if gain <= measured + SHARE_SLACK:
        return (text + f": {100 * gain:.0f}% of the seed configuration's epoch was the input pipeline, as its step "
                f"split allows (data wait and copy {100 * measured:.0f}% of the step)." + _share_line(numbers))
    compute = (number(base.get("split_compute_ms")), best.compute_ms)
    moved = (f" (host compute {compute[0]:.2f} -> {compute[1]:.2f} ms per step)"
             if not any(math.isnan(c) for c in compute) else "")
    return (text + f", but the step split had data wait and copy at only {100 * measured:.0f}% of the seed "
            f"configuration's step: that much of its epoch was the input pipeline, and the rest of the gain came "
            f"from elsewhere{moved}, which a loader does not change." + _share_line(numbers))


def _share_line(numbers: dict[str, float]) -> str:
    """A sentence where the loader's gain lies within `SHARE_BAND` of the share its step split allows;
    `numbers["share_close"]` then says so."""
    gain, measured = numbers["gain"], numbers["input_share"]
    if not abs(gain - (measured + SHARE_SLACK)) < SHARE_BAND:
        return ""
    numbers["share_close"] = 1.0
    return (f" The {100 * gain:.0f}% gain is within {100 * SHARE_BAND:.0f} points of the "
            f"{100 * (measured + SHARE_SLACK):.0f}% the step split allows (its {100 * measured:.0f}% plus "
            f"{100 * SHARE_SLACK:.0f} points of slack), {_rerun((int(numbers['runs']), int(numbers['base_runs'])))}.")


STEP_PARTS = (("data", "data wait"), ("copy", "copy"), ("compute", "host compute (launching, on a GPU)"),
              ("sync", "wait in loss.item()"))


def rung_steps(rows: Sequence[Row]) -> list[Finding]:
    """What each rung of a ladder removed: rows are runs of one device in ladder order. Each is
    set against the latest earlier rung whose knobs it keeps (so a rung that replaces another,
    like compile instead of CUDA graphs, is set against the one below both): the steady step
    time, and the host phase that changed most, so a reader sees which wait a knob took away."""
    found = []
    for index, after in enumerate(rows):
        mine = {k: str(after.get(k)) for k in changed_knobs(after)}
        before = next((r for r in reversed(rows[:index])
                       if all(mine.get(k) == str(r.get(k)) for k in changed_knobs(r))), None)
        if before is None:
            continue
        step_a, step_b = number(before.get("step_median_ms")), number(after.get("step_median_ms"))
        if not (step_a > 0 and step_b > 0):
            continue
        added = [k for k in mine if str(before.get(k)) != mine[k]]
        changes = {name: number(after.get(f"split_{name}_ms")) - number(before.get(f"split_{name}_ms"))
                   for name, _ in STEP_PARTS}
        changes = {k: v for k, v in changes.items() if not math.isnan(v)}
        knobs = ",".join(f"{k}={'on' if mine[k] == 'True' else mine[k]}" for k in added)
        text = (f"{knobs} (against {change_label(before)}): median step "
                f"{step_a:.3f} -> {step_b:.3f} ms ({step_a / step_b:.2f}x)")
        part = min(changes, key=lambda k: changes[k]) if changes else None
        if part is not None and changes[part] < 0:
            a, b = number(before.get(f"split_{part}_ms")), number(after.get(f"split_{part}_ms"))
            text += f"; {dict(STEP_PARTS)[part]} {a:.3f} -> {b:.3f} ms per step (mean)"
        numbers = {"step_before_ms": step_a, "step_after_ms": step_b} | {f"{k}_delta_ms": v for k, v in changes.items()}
        busy = busy_beside([(change_label(before), neighbours(before)), (change_label(after), neighbours(after))])
        if busy:
            numbers["contended"] = 1.0
            text += f"; not the knob's alone: {busy}"
        found.append(Finding("rung", text + ".", numbers))
    return found


def kernel_anatomy(sweep: Sequence[Row]) -> Finding | None:
    """Where the CPU sweep's kernel time went, from the counters of its training windows: how
    sys/user, voluntary switches and minor faults per step moved from the fewest threads to the
    most, and the cause `analysis.kernel` names at each end."""
    rows = {t: r for r in sweep if (t := thread_count(r)) is not None and kernel.counters(r) is not None}
    by_threads = {t: c for t, r in rows.items() if (c := kernel.counters(r)) is not None}
    if len(by_threads) < 2:
        return None
    low, high = min(by_threads), max(by_threads)
    a, b = by_threads[low], by_threads[high]
    verdict_a, verdict_b = kernel.verdict(a), kernel.verdict(b)
    vol = (a.per_step(a.voluntary), b.per_step(b.voluntary))
    faults = (a.per_step(a.minor_faults), b.per_step(b.minor_faults))
    numbers = {"sys_user_low": a.sys_user, "sys_user_high": b.sys_user, "voluntary_low": vol[0],
               "voluntary_high": vol[1], "faults_low": faults[0], "faults_high": faults[1]}
    on = f" on {b.cores:.0f} cores" if math.isfinite(b.cores) else ""
    text = (f"From {low} to {high} threads{on}, over the training windows sys/user went {a.sys_user:.2f} -> "
            f"{b.sys_user:.2f}; voluntary context switches per step {vol[0]:,.0f} -> {vol[1]:,.0f}"
            f"{_times(vol)}; minor faults per step {faults[0]:,.0f} -> {faults[1]:,.0f}{_times(faults)}")
    queue = (a.runqueue_ms_per_step, b.runqueue_ms_per_step)
    if all(math.isfinite(q) for q in queue):
        text += f"; run-queue wait {queue[0]:.1f} -> {queue[1]:.1f} ms per step"
        numbers |= {"runqueue_ms_low": queue[0], "runqueue_ms_high": queue[1]}
    text += (f". At {low} thread{'s' if low > 1 else ''} the kernel time is {verdict_a.label} "
             f"({_costs(verdict_a)}); at {high} it is {verdict_b.label} ({_costs(verdict_b)}).")
    busy = busy_beside([(f"{low}-thread", neighbours(rows[low])), (f"{high}-thread", neighbours(rows[high]))])
    flat = FLAT_LOW <= faults[1] / faults[0] <= FLAT_HIGH if faults[0] > 0 else False
    if busy:
        numbers["contended"] = 1.0
        text += f" How the counters moved is not read as the threads' doing: {busy}."
    elif flat and verdict_b.cause != kernel.ALLOCATOR:
        text += " The faults stay flat while the switches grow: the threads, not the allocator, add the kernel time."
    return Finding("kernel", text, numbers)


FLAT_LOW, FLAT_HIGH = 0.75, 1.33  # a counter per step that moves less than this across threads is flat


def wait_policy_effect(sweep: Sequence[Row], policy_rows: Sequence[Row]) -> Finding | None:
    """What `--omp-wait-policy passive` and `active` did to sys, user and speed, at the top thread
    count where both the default and the policy ran."""
    default = {t: r for r in sweep if (t := thread_count(r)) is not None}
    found = []
    numbers: dict[str, float] = {}
    for policy in ("passive", "active"):
        pairs = {t: (default[t], r) for r in policy_rows if r.get("omp_wait_policy") == policy
                 and (t := thread_count(r)) in default}
        if not pairs:
            continue
        top = max(pairs)
        base, other = (kernel.counters(r) for r in pairs[top])
        if base is None or other is None:
            continue
        busy = busy_beside([("default policy's", neighbours(pairs[top][0])), (policy, neighbours(pairs[top][1]))])
        if busy:
            found.append(f"--omp-wait-policy {policy} at {top} threads is not compared: {busy}")
            numbers[f"{policy}_contended"] = 1.0
            continue
        speed = number(pairs[top][1].get("samples_per_s")) / number(pairs[top][0].get("samples_per_s"))
        found.append(f"--omp-wait-policy {policy} at {top} threads: sys {base.sys_s:.2f} -> {other.sys_s:.2f} s, "
                     f"user {base.user_s:.2f} -> {other.user_s:.2f} s, voluntary switches per step "
                     f"{base.per_step(base.voluntary):,.0f} -> {other.per_step(other.voluntary):,.0f}, samples/s "
                     f"x{speed:.2f}")
        numbers |= {f"{policy}_sys_ratio": other.sys_s / base.sys_s if base.sys_s > 0 else math.nan,
                    f"{policy}_speedup": speed}
    if not found:
        return None
    text = "Against the runtime's default wait policy (training windows): " + "; ".join(found) + "."
    return Finding("kernel", text, numbers)


def allocator_effect(whatif_rows: Sequence[Row], baselines: Mapping[str, Row]) -> list[Finding]:
    """Each preloaded allocator against glibc's, same configuration otherwise: faults, sys, speed.
    Beside busy neighbours only the faults are compared: a neighbour does not add page faults
    to a run, but it does stretch its times."""
    found = []
    for row in whatif_rows:
        allocator = str(row.get("allocator") or "system")
        base = baselines.get(str(row.get("device")))
        if allocator == "system" or base is None:
            continue
        mine, theirs = kernel.counters(row), kernel.counters(base)
        if mine is None or theirs is None:
            continue
        numbers = {"faults_before": theirs.per_step(theirs.minor_faults),
                   "faults_after": mine.per_step(mine.minor_faults)}
        text = (f"--allocator {allocator}: minor faults per step {numbers['faults_before']:,.0f} -> "
                f"{numbers['faults_after']:,.0f}")
        busy = busy_beside([("seed configuration", neighbours(base)), (change_label(row), neighbours(row))])
        if busy:
            numbers["contended"] = 1.0
            found.append(Finding("kernel", f"{text}; its sys and step times are not compared: {busy}.", numbers))
            continue
        step = (number(base.get("step_median_ms")), number(row.get("step_median_ms")))
        speed = step[0] / step[1] if step[1] > 0 else math.nan
        text += (f", sys over the training window {theirs.sys_s:.2f} -> {mine.sys_s:.2f} s, median step "
                 f"{step[0]:.2f} -> {step[1]:.2f} ms ({speed:.2f}x)")
        numbers |= {"sys_before": theirs.sys_s, "sys_after": mine.sys_s, "speedup": speed}
        found.append(Finding("kernel", text + ".", numbers))
    return found


def sys_claim(outcome: str, published_sys_user: float, sweep: Sequence[Row], machine: Mapping[str, Any],
              here: Row) -> Finding | None:
    """Whether a published sys-above-user claim holds here, and if not, which difference of
    machine can account for it: a sandbox's accounting, fewer cores (a smaller pool to wake at
    every op), or another OpenMP runtime. `outcome` is the relation's verdict here."""
    if outcome not in ("agrees", "disagrees", "too close to call"):
        return None
    rows = [r for r in sweep if kernel.counters(r) is not None] or [here]
    top = max(rows, key=lambda r: thread_count(r) or 0)
    ratio = number(top.get("sys_s")) / number(top.get("user_s")) if number(top.get("user_s")) > 0 else math.nan
    threads, cores = thread_count(top), number(here.get("fp_logical_cores"))
    if outcome == "agrees":
        text = f"The published sys above user holds here (published sys/user {published_sys_user:.2f})."
        return Finding("claim", text, {"sys_user_top": ratio})
    text = (f"The published CPU run spent {published_sys_user:.2f}x as long in the kernel as in user mode; here it "
            f"does not: even at {threads} threads sys/user is {ratio:.2f}.")
    reasons = []
    sandbox = str(here.get("fp_sandbox") or "")
    if sandbox:
        reasons.append(f"this machine runs a sandboxed kernel ({sandbox}): its sys time is the sandbox's own "
                       "accounting, not a host kernel's, so the ratio is not comparable")
    published_cores = number(machine.get("logical_cores"))
    if published_cores > cores:
        reasons.append(f"cores: {published_cores:.0f} published against {cores:.0f} here. {_pool_growth(sweep, rows)}"
                       f"Here a pool of more than {cores:.0f} threads would have at most {cores:.0f} in the kernel "
                       f"at once and queue the rest, where {published_cores:.0f} cores let {published_cores:.0f} "
                       "threads sleep and wake in parallel. Only a machine with many cores can show whether that "
                       "is the published ratio")
    runtime = str(here.get("fp_openmp_runtime") or "")
    if runtime and "openmp_runtime" not in machine:
        reasons.append(f"the OpenMP runtime: {runtime} here; the published machine's is not published (pip's torch "
                       "bundles libgomp, so probably the same)")
    elif runtime and str(machine["openmp_runtime"]) != runtime:
        reasons.append(f"the OpenMP runtime: {machine['openmp_runtime']} published against {runtime} here: their "
                       "wait policies differ (libgomp sleeps after ~3 ms of spinning, Intel's after 200 ms)")
    if reasons:
        text += " What differs: " + "; ".join(reasons) + "."
    return Finding("claim", text, {"sys_user_top": ratio, "published_sys_user": published_sys_user})


def _pool_growth(sweep: Sequence[Row], rows: Sequence[Row]) -> str:
    """Whether kernel time grew faster than user time with the thread pool here, by the rule and
    the runs of `thread_scaling`, as a sentence; where the sweep cannot say, a sentence saying why."""
    scaling = thread_scaling(sweep)
    if scaling is None:
        return "No thread sweep here shows how kernel time grows with the pool (run without --quick). "
    n = scaling.numbers
    if n.get("contended"):
        return "The thread sweep's ends ran beside busy neighbours, so it cannot say how kernel time grows here. "
    switches = [(t, c.per_step(c.voluntary)) for r in rows if (t := thread_count(r)) and
                (c := kernel.counters(r)) is not None]
    woken = ""
    if len(switches) >= 2:
        (t0, v0), (t1, v1) = min(switches), max(switches)
        woken = (f"; voluntary switches per step went {v0:,.0f} -> {v1:,.0f} from {t0} to {t1} threads: each "
                 "parallel op wakes every sleeping thread of the pool")
    growth = (f"from {n['threads_low']:.0f} to {n['threads_high']:.0f} threads sys went x{n['sys_growth']:.2f}, "
              f"user x{n['user_growth']:.2f}{woken}")
    if n.get("sys_outgrows_user_close"):
        return (f"Whether kernel time here grows faster than user time with the pool is not settled: it grew "
                f"{n['sys_growth'] / n['user_growth']:.2f}x as fast ({growth}), {_sys_line(n)}. ")
    if n["sys_outgrows_user"]:
        return f"Kernel time here grows faster than user time with the pool ({growth}). "
    return (f"Kernel time here does not grow faster than user time with the pool ({growth}), so the pool does not "
            "explain the published ratio on these cores. ")


def _times(pair: tuple[float, float]) -> str:
    """` (x3.2)`: how many times the first; nothing where the first is under one (a ratio to
    nearly nothing says nothing)."""
    return f" (x{pair[1] / pair[0]:.2g})" if pair[0] >= 1 and math.isfinite(pair[1]) else ""


def _costs(verdict: kernel.Verdict) -> str:
    ranked = sorted(verdict.costs_ms.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} ~{ms:.2f} ms/step" for name, ms in ranked)


@dataclass(frozen=True)
class Difference:
    field: str
    published: Any
    here: Any
    why: str


def machine_differences(machine: Mapping[str, Any], here: Row) -> tuple[list[Difference], list[str]]:
    """Fingerprint fields that differ from the published machine's, and those it does not publish."""
    differ, unknown = [], []
    for name, why in MACHINE_WHY.items():
        mine = here.get(f"fp_{name}")
        mine = None if is_missing(mine) else _whole(mine)
        mine = "none" if name == "gpu_name" and not mine else mine
        if name not in machine:
            unknown.append(name)
        elif mine is not None and str(mine) != str(_whole(machine[name])):
            differ.append(Difference(name, machine[name], mine, why))
    return differ, unknown


def _whole(value: Any) -> Any:
    """A whole float as an int: a results table holds 20 cores as 20.0 where a claim file says 20."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def machine_finding(label: str, machine: Mapping[str, Any], here: Row, data: str = "") -> Finding | None:
    """One sentence per published row: what differs from it here, and what it could explain."""
    differ, unknown = machine_differences(machine, here)
    source = str(here.get("data_source") or "")
    parts = [f"{MACHINE_NAMES[d.field]} {d.published} published vs {d.here} here ({d.why})" for d in differ]
    if data and source and source != data:
        parts.append(f"data {data} published vs {source} here (the losses are not comparable; "
                     "the time per sample is, at the same samples per epoch)")
    if not parts:
        return None
    text = f"Against {label}: " + "; ".join(parts) + "."
    if unknown:
        text += " Not published, so not compared: " + ", ".join(MACHINE_NAMES[n] for n in unknown) + "."
    numbers = {d.field: float(d.here) for d in differ if isinstance(d.here, int | float)}
    return Finding("machine", text, numbers)
