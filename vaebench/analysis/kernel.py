"""Where a CPU run's kernel (sys) time goes, read from its counters, and which knob stops it.

Pure rules on numbers a run already records; the one home of their thresholds. The causes,
each with its own signature:

- **allocator page faults**: glibc gives freed memory back to the kernel and takes it again
  at the next step, zero-filled page by page. For the step's buffers (a batch of 128 x 784
  floats is 401 KB) that is mostly its heap trimmed and regrown with `brk` (~7 calls a step
  here; its mmap threshold rises past the batch after the first free), rather than one mmap
  per buffer: minor faults per step, the same at any thread count, gone with `--allocator
  jemalloc` or `tcmalloc`, which keep freed memory.
- **OpenMP wake-ups**: at every parallel op the pool's idle threads sleep in futex calls and
  are woken again: voluntary context switches per step, growing with the threads, none at one.
  `--omp-wait-policy active` keeps them spinning in user space instead.
- **oversubscription**: more intra-op threads than usable cores. Threads wait in the run
  queue (`runqueue_wait_s`) and are preempted (involuntary switches), and the runtime gives up
  spinning (libgomp spins 100 times instead of ~3 ms when it has more threads than CPUs), so
  every wait becomes a sleep and a wake-up: the switches above, caused by the thread count.
- **DataLoader workers**: each worker process runs its own interpreter and thread pools; their
  CPU is the tree's less the training process's own.

Each cause is costed in kernel milliseconds per step from its counters at a few microseconds
per event (`FAULT_US`, `SWITCH_US`, fitted on recorded runs; see `docs/kernel-time.md`), so
causes of different kinds compare on one scale, and the largest is named with its evidence.
Involuntary switches that no cause claims (other processes taking the cores) are costed too,
and what the counters leave of the sys time is shown: a cause is said to be "most of it" only
where its cost is.
The per-step counters come from the training window, never the whole process: importing
torch alone costs about 110,000 minor faults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._format import amount, counted
from ..stats import number

ALLOCATOR = "allocator page faults"
WAKEUPS = "OpenMP wake-ups"
OVERSUBSCRIPTION = "oversubscription"
WORKERS = "DataLoader workers"
CAUSES = (ALLOCATOR, WAKEUPS, OVERSUBSCRIPTION, WORKERS)

# Kernel time per event, fitted (least squares, no intercept) on the 119 runs of the 2-core VM's
# two sweeps in docs/kernel-time.md: sys ms/step ~ faults/step x 2.5 us + switches/step x 3.2 us,
# R^2 0.93 (an intercept fits at 0.1 ms/step: the two leave little unexplained).
FAULT_US = 2.5  # a minor fault: the trap, a zeroed 4 KiB page, its share of brk/mmap
SWITCH_US = 3.2  # a context switch: the futex call and the scheduler on both sides
SYS_SMALL = 0.10  # sys/user below this: little kernel time, whatever its cause
MOST = 0.5  # a cause is "most of" the sys time only at this share of it or more
ALSO = 0.5  # a second cause costing at least this share of the first is named beside it...
ALSO_MIN_MS = 0.1  # ...and at least this much kernel time per step
WORKER_SHARE = 0.25  # workers using this share of the tree's CPU or more are a cause of their own
MAJOR_FAULTS = 1.0  # major faults per step at or above this: pages came back from disk, memory ran short

KNOBS: dict[str, str] = {
    ALLOCATOR: "--allocator jemalloc (or tcmalloc)",
    WAKEUPS: "--omp-wait-policy active, or fewer --threads",
    OVERSUBSCRIPTION: "--threads at most the usable cores",
    WORKERS: "fewer --workers, or --loader tensor",
}
# Run columns the rules read; the report takes their medians per configuration.
INPUTS = (
    "steps_done", "train_user_s", "train_sys_s", "train_minor_faults", "train_major_faults", "train_ctx_voluntary",
    "train_ctx_involuntary", "runqueue_wait_s", "user_s", "sys_s", "main_cpu_s", "fp_torch_threads",
    "fp_usable_cores", "fp_logical_cores",
)
# Per-step columns derived from them, for tables and figures: (column, what it is).
PER_STEP = (
    ("sys_user", "sys / user, training window"),
    ("faults_per_step", "minor page faults per step"),
    ("voluntary_per_step", "voluntary context switches per step"),
    ("involuntary_per_step", "involuntary context switches per step"),
    ("runqueue_ms_per_step", "run-queue wait per step (ms, summed over threads)"),
)


@dataclass(frozen=True)
class Counters:
    """One CPU run's (or configuration's median) kernel-time counters over its training window."""

    steps: float
    user_s: float  # the training process's own, training window
    sys_s: float
    minor_faults: float
    voluntary: float
    involuntary: float
    runqueue_s: float = math.nan  # summed over the training process's threads
    major_faults: float = math.nan
    threads: float = math.nan  # intra-op threads, of each rank
    cores: float = math.nan  # usable cores
    ranks: float = 1.0  # training processes on this host (data-parallel ranks); the counters are rank 0's
    workers: float = 0.0
    workers_cpu_s: float = math.nan  # the tree's CPU less the training process's, whole run
    tree_cpu_s: float = math.nan
    tree_sys_share: float = math.nan  # the tree's sys / (user + sys), whole run
    allocator: str = "system"

    def per_step(self, value: float) -> float:
        return value / self.steps if self.steps > 0 else math.nan

    @property
    def sys_user(self) -> float:
        return self.sys_s / self.user_s if self.user_s > 0 else math.nan

    @property
    def oversubscribed(self) -> bool:
        return self.threads * self.ranks > self.cores  # False where either is NaN

    @property
    def switches(self) -> float:
        return _finite(self.voluntary) + _finite(self.involuntary)

    @property
    def runqueue_ms_per_step(self) -> float:
        return self.per_step(self.runqueue_s) * 1e3

    def per_step_figures(self) -> dict[str, float]:
        """`PER_STEP`'s columns."""
        return {
            "sys_user": self.sys_user,
            "faults_per_step": self.per_step(self.minor_faults),
            "voluntary_per_step": self.per_step(self.voluntary),
            "involuntary_per_step": self.per_step(self.involuntary),
            "runqueue_ms_per_step": self.runqueue_ms_per_step,
        }


@dataclass(frozen=True)
class Verdict:
    cause: str  # one of CAUSES
    costs_ms: dict[str, float]  # cause -> estimated kernel ms per step
    evidence: tuple[str, ...]
    also: str = ""  # a second cause nearly as costly
    small: bool = False  # sys/user below SYS_SMALL: the cause is named, the problem is small
    numbers: dict[str, float] = field(default_factory=dict)
    allocator: str = "system"  # the run's --allocator
    ranks: float = 1.0  # training processes on the host, sharing its cores

    @property
    def knob(self) -> str:
        if self.cause == ALLOCATOR and self.allocator != "system":
            return (f"none left: --allocator {self.allocator} is set, and keeps freed memory; "
                    "the faults are first touches")
        if self.cause == OVERSUBSCRIPTION and self.ranks > 1:
            return "--threads at most the usable cores divided by --nproc-per-node, the ranks sharing them"
        return KNOBS[self.cause]

    @property
    def sys_ms(self) -> float:
        return self.numbers.get("sys_ms_per_step", math.nan)

    @property
    def share(self) -> float:
        """The named cause's (and the one beside it) estimated share of the sys time."""
        named = self.costs_ms[self.cause] + (self.costs_ms[self.also] if self.also else 0.0)
        return named / self.sys_ms if self.sys_ms > 0 else math.nan

    @property
    def label(self) -> str:
        """The cause, with the second one where it is nearly as costly: `oversubscription (+ ...)`."""
        return self.cause + (f" (+ {self.also})" if self.also else "")

    def __str__(self) -> str:
        head = f"{self.cause}" + (f" (and {self.also})" if self.also else "")
        if math.isnan(self.share):  # unknown (no sys time): it claims no share either way
            head = f"little kernel time, {head}" if self.small else head
        elif self.small:
            head = f"little kernel time, most of it {head}" if self.share >= MOST else \
                f"little kernel time, {self.share:.0%} of it {head}, the largest cause named"
        elif self.share < MOST:
            head = f"{head}, the largest cause named but {self.share:.0%} of the sys time"
        knob = f"Knob, should it matter: {self.knob}" if self.small else f"Knob: {self.knob}"
        return f"{head}: " + "; ".join(self.evidence) + f". {knob}."


def counters(row: Mapping[str, Any]) -> Counters | None:
    """The counters of a CPU run from a record row (`load_runs` columns); None for a GPU run,
    a profiled one, or one without training-window counters (recorded before they existed)."""
    if str(row.get("device", "cpu")) != "cpu":
        return None  # a GPU run's sys time is the driver's: none of these causes
    if row.get("profile") == True:  # noqa: E712 - a numpy bool from a frame is not `True` itself
        return None  # the profiler's own work (its trace, its buffers) is in the window's faults and sys
    return read_counters(row)


def read_counters(row: Mapping[str, Any]) -> Counters | None:
    """The training-window counters of a row on any device; None where they are missing."""
    cell = {name: number(row.get(name)) for name in (*INPUTS, "threads", "workers", "nproc_per_node")}
    steps, user, sys_ = cell["steps_done"], cell["train_user_s"], cell["train_sys_s"]
    faults, voluntary = cell["train_minor_faults"], cell["train_ctx_voluntary"]
    if not (steps > 0 and user > 0) or math.isnan(sys_ + faults + voluntary):
        return None
    threads = cell["fp_torch_threads"] if math.isnan(cell["threads"]) else cell["threads"]
    cores = cell["fp_logical_cores"] if math.isnan(cell["fp_usable_cores"]) else cell["fp_usable_cores"]
    ranks = cell["nproc_per_node"] if cell["nproc_per_node"] >= 1 else 1.0
    # The tree less every rank's own CPU, each rank taken to use what rank 0 did: the workers' share.
    tree, main = cell["user_s"] + cell["sys_s"], ranks * cell["main_cpu_s"]
    return Counters(
        steps=steps, user_s=user, sys_s=sys_, minor_faults=faults, voluntary=voluntary,
        major_faults=cell["train_major_faults"],
        involuntary=cell["train_ctx_involuntary"], runqueue_s=cell["runqueue_wait_s"], threads=threads, cores=cores,
        ranks=ranks,
        workers=_finite(cell["workers"]), workers_cpu_s=max(tree - main, 0.0) if tree > 0 and main > 0 else math.nan,
        tree_cpu_s=tree, tree_sys_share=cell["sys_s"] / tree if tree > 0 else math.nan,
        allocator=str(row.get("allocator") or "system"),
    )


def costs(c: Counters) -> dict[str, float]:
    """Estimated kernel milliseconds per step of each cause the counters show.

    One pool's switches are either cause, never both, and the thread count says which: with
    more threads than cores every switch is the pool's (it sleeps where it would spin, and is
    preempted); with no more, only the voluntary ones are wake-ups, the involuntary ones being
    other processes taking the cores.
    """
    switches = c.switches if c.oversubscribed else _finite(c.voluntary)
    found = {
        ALLOCATOR: c.per_step(c.minor_faults) * FAULT_US / 1e3,
        OVERSUBSCRIPTION if c.oversubscribed else WAKEUPS: c.per_step(switches) * SWITCH_US / 1e3,
    }
    if c.workers > 0 and c.workers_cpu_s >= WORKER_SHARE * c.tree_cpu_s:
        found[WORKERS] = c.per_step(c.workers_cpu_s * c.tree_sys_share) * 1e3
    return {k: v for k, v in found.items() if math.isfinite(v)}


def preempted_ms(c: Counters) -> float:
    """Estimated kernel milliseconds per step of the involuntary switches no cause claims: with no
    more threads than cores they are other processes taking the cores (`costs`)."""
    return 0.0 if c.oversubscribed else c.per_step(_finite(c.involuntary)) * SWITCH_US / 1e3


def verdict(c: Counters) -> Verdict:
    """Name the cause that costs the kernel most per step, with the counts behind it."""
    found = costs(c)
    preempted = preempted_ms(c)
    sys_ms = c.per_step(c.sys_s) * 1e3
    # The per-event costs are one machine's fit: where they add up past the sys time measured
    # here, they are scaled down to it, so no cause is said to cost more than the kernel took.
    estimated = sum(found.values()) + preempted
    scale = min(1.0, sys_ms / estimated) if estimated > 0 and sys_ms > 0 else 1.0
    found = {k: v * scale for k, v in found.items()}
    preempted *= scale
    unexplained = max(sys_ms - sum(found.values()) - preempted, 0.0)
    ranked = sorted(found, key=lambda k: -found[k])
    cause = ranked[0]
    runner_up = found[ranked[1]] if len(ranked) > 1 else 0.0
    second = ranked[1] if runner_up >= max(ALSO * found[cause], ALSO_MIN_MS) else ""
    numbers = {**c.per_step_figures(), "sys_ms_per_step": sys_ms, "cost_scale": scale,
               "preempted_ms_per_step": preempted, "unexplained_ms_per_step": unexplained,
               **{f"cost_ms:{k}": v for k, v in found.items()}}
    window = "the training window" if c.ranks == 1 else "rank 0's training window"
    evidence = [f"sys/user {c.sys_user:.2f} over {window} ({sys_ms:.2f} ms of sys per step)"]
    evidence += [_explain(name, c, found[name], scale) for name in ranked]
    if preempted > 0:
        evidence.append(f"{counted(c.per_step(c.involuntary), 'involuntary context switch', rate=True)} per step "
                        "from other "
                        f"processes taking the cores (~{preempted:.2f} ms of kernel per step at "
                        f"{SWITCH_US * scale:.2g} us each)")
    if c.per_step(c.major_faults) >= MAJOR_FAULTS:
        numbers["major_faults_per_step"] = c.per_step(c.major_faults)
        evidence.append(f"and {counted(c.major_faults, 'major fault')} in the training window: pages were read "
                        "back from disk, so memory ran short on this machine (another process?), which none of these "
                        "causes is")
    if scale < 1.0:
        evidence.append(f"the fitted costs ({FAULT_US:.2g} us a fault, {SWITCH_US:.2g} us a switch) add up to "
                        f"~{estimated:.2f} ms per step, more than the sys measured, so each is scaled by "
                        f"{scale:.2f} to fit it: the causes above share out the measured sys time")
    # Scaled, the estimates are the whole sys time by construction; a rest under 1 % says nothing.
    elif sys_ms > 0 and round(100 * unexplained / sys_ms) >= 1:
        evidence.append(f"the rest, ~{unexplained:.2f} ms of sys per step ({unexplained / sys_ms:.0%}), is none of "
                        "these: the counters do not explain it"
                        + ("" if c.ranks == 1 else ", nor count the ranks' gradient exchange (gloo's sockets)"))
    return Verdict(cause, found, tuple(evidence), second, c.sys_user < SYS_SMALL, numbers, c.allocator, c.ranks)


def kernel_verdict(row: Mapping[str, Any]) -> Verdict | None:
    """`verdict` of a record row, or None where it has no CPU training-window counters."""
    found = counters(row)
    return verdict(found) if found is not None else None


def per_step_columns(row: Mapping[str, Any]) -> dict[str, float]:
    """`PER_STEP`'s columns of one row; NaN where the counters are missing."""
    c = read_counters(row)
    return c.per_step_figures() if c is not None else {name: math.nan for name, _ in PER_STEP}


def _explain(cause: str, c: Counters, cost_ms: float, scale: float = 1.0) -> str:
    cost = f"~{cost_ms:.2f} ms of kernel per step"
    fault_us, switch_us = f"{FAULT_US * scale:.2g}", f"{SWITCH_US * scale:.2g}"  # per event, as scaled
    if cause == ALLOCATOR:
        return f"{counted(c.per_step(c.minor_faults), 'minor page fault')} per step ({cost} at {fault_us} us each)"
    if cause == WORKERS:
        share = c.workers_cpu_s / c.tree_cpu_s
        uses = "uses" if round(c.workers) == 1 else "use"
        return f"{counted(c.workers, 'DataLoader worker')} {uses} {100 * share:.0f}% of the tree's CPU ({cost})"
    placed = f"{counted(c.threads, 'thread')} on {counted(c.cores, 'core')}"
    if c.ranks > 1:
        placed = f"{counted(c.ranks, 'rank')} x {placed}"
    if cause == WAKEUPS:
        return (f"{counted(c.per_step(c.voluntary), 'voluntary context switch', rate=True)} per step ({cost} at "
                f"{switch_us} us "
                f"each) with {placed}")
    switches = (f"{amount(c.per_step(c.voluntary), rate=True)} voluntary + "
                f"{amount(c.per_step(c.involuntary), rate=True)} involuntary "
                f"context switches per step ({cost} at {switch_us} us each)")
    queued = c.runqueue_ms_per_step
    wait = f", {queued:.1f} ms of run-queue wait per step" if math.isfinite(queued) else ""
    return switches + f": {placed}{wait}"


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
