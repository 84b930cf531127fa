"""Result records: what one run produced, as typed parts flattened into one table row.

The row format is the contract between the execution side (runner, the child's loop) and
the analysis side (storage, report, compare): both sides meet only here. Bump
`SCHEMA_VERSION` when a column changes meaning.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .spec import FIELD_TYPES, LATER_FIELDS, SPEC_FIELDS, RunSpec
from .stats import finite

SCHEMA_VERSION = 1
OK = "ok"
FAILED = "failed"


@dataclass(frozen=True)
class ProcessUsage:
    """The child process tree as `/usr/bin/time` sees it (wait4 rusage of the child)."""

    real_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    ctx_voluntary: int
    ctx_involuntary: int
    exit_code: int
    main_cpu_s: float = math.nan  # the training process alone; the rest is its workers'
    minor_faults: float = math.nan  # page faults served from memory: mostly fresh pages zero-filled on first touch
    major_faults: float = math.nan  # page faults that waited for the disk

    @property
    def cpu_pct(self) -> float:
        """The seed's formula: (user + sys) / real, in percent."""
        return 100.0 * (self.user_s + self.sys_s) / self.real_s if self.real_s > 0 else math.nan


@dataclass(frozen=True)
class DataInfo:
    source: str  # mnist, embedded-5k or synthetic: what the run really trained on
    samples: int  # samples per epoch
    repeat: float  # how many times the source's distinct images are repeated per epoch
    path: str  # the folder of the torchvision layout
    images: int = 0  # distinct images in the source (0: not known yet, as in a dry run)
    digest: str = ""  # of the training images file: equal only for the same images in the same order


@dataclass(frozen=True)
class StepSplit:
    """Mean per-step milliseconds after warm-up, as the host saw them; the four host parts
    add up to the step time. On a GPU, `compute` is the host's launch time and `sync` the
    wait for the device. The `device_*` fields are CUDA events' stream time from the copy to
    the step's end: it includes every gap where the GPU waited for the host, so it is not
    busy time (the profiler's `profile_busy_fraction` is), except on a `--cuda-graphs` step,
    queued at once as one graph, where it bounds the device's work from above."""

    data_ms: float = math.nan  # host waiting for the next batch
    copy_ms: float = math.nan  # host-to-device copy
    compute_ms: float = math.nan  # forward, backward and optimizer
    sync_ms: float = math.nan  # blocked in loss.item() until the device caught up
    # CUDA only, from events: stream time of the copy, and from the copy to the step's end.
    device_copy_ms: float = math.nan
    device_compute_ms: float = math.nan


@dataclass(frozen=True)
class CompileStats:
    """torch.compile accounting; absent (NaN) for an eager run, whose counts of 0 would read as measured."""

    compile_s: float = math.nan  # dynamo + inductor time, forward and backward, recompiles included
    recompiles: float = math.nan
    compile_cudagraph_skips: float = math.nan  # graphs meant to replay as CUDA graphs that ran without them
    compile_graphs: float = math.nan
    compile_cache: str = ""  # warm, cold, partly warm, off (no hit nor miss) from the on-disk cache; "" eager
    compile_warnings: list[str] = field(default_factory=list)
    eager_step_ms: float = math.nan  # median step of an uncompiled copy, for the payback
    compiled_step_ms: float = math.nan  # the compiled run's median step less its data wait, to set beside it
    compile_payback_steps: float = math.nan


@dataclass(frozen=True)
class ProfileStats:
    """The torch.profiler window's summary; absent for an unprofiled run."""

    profile_trace: str = ""  # Chrome/Perfetto JSON of the profiler window
    profile_busy_fraction: float = math.nan  # union of kernel, memcpy and memset (on a CPU, aten op) time over wall
    profile_kernel_fraction: float = math.nan  # kernels alone: the figure to set beside utilization.gpu
    profile_busy_source: str = ""
    profile_kernels_per_step: float = math.nan
    profile_overhead_pct: float = math.nan
    # That union per profiled step: beside the unprofiled step it gives the busy share without
    # the profiler's own slowing of the host, which the fraction above counts as idle time.
    profile_busy_ms_per_step: float = math.nan
    profile_underfilled_share: float = math.nan  # of kernel time: kernels with fewer blocks than the GPU has SMs


@dataclass(frozen=True)
class TrainUsage:
    """The training process's own rusage over the training window (all its threads, not the
    DataLoader workers): per-step kernel figures without the import's and set-up's faults."""

    train_user_s: float = math.nan
    train_sys_s: float = math.nan
    train_minor_faults: float = math.nan
    train_major_faults: float = math.nan
    train_ctx_voluntary: float = math.nan
    train_ctx_involuntary: float = math.nan


@dataclass(frozen=True)
class RankStats:
    """A data-parallel run's ranks (world size above 1); empty for one process. The step and
    samples/s of the metrics are rank 0's view of the whole job (DDP holds the ranks in step);
    these keep every rank's own."""

    rank_step_median_ms: list[float] = field(default_factory=list)  # each rank's median steady step
    rank_allreduce_ms: list[float] = field(default_factory=list)  # each rank's median gradient all-reduce
    allreduce_ms: float = math.nan  # mean over ranks of the median time a step spends in the all-reduce
    allreduce_share: float = math.nan  # allreduce_ms over the median step


@dataclass(frozen=True)
class TrainMetrics:
    """What the child measured inside its own loop."""

    t_import_s: float
    t_data_s: float
    t_model_s: float
    t_first_step_s: float
    train_s: float
    steps_done: int
    samples_seen: int
    warmup_steps: int
    step_median_ms: float
    step_iqr_ms: float
    samples_per_s: float  # steady state: the median over steps of their samples / their time
    epoch_s: float  # median wall time of the whole epochs: NaN when --steps ended the only one
    final_loss: float
    epoch_losses: list[float]
    epoch_times_s: list[float]
    split: StepSplit
    model_flops_per_s: float
    peak_flops_per_s: float
    flops_frac: float
    last_epoch_partial: bool = False  # --steps ended the last epoch early: its loss covers only its steps
    warnings: list[str] = field(default_factory=list)  # what went wrong beside the numbers: the picture not written
    train_start_unix: float = math.nan  # wall clock, to place the training window in the monitor's samples
    train_end_unix: float = math.nan
    compile: CompileStats = field(default_factory=CompileStats)
    profile: ProfileStats = field(default_factory=ProfileStats)
    usage: TrainUsage = field(default_factory=TrainUsage)
    ranks: RankStats = field(default_factory=RankStats)


@dataclass(frozen=True)
class MonitorSummary:
    """Summary of the parent's outside samples; NaN where the source is absent."""

    monitor_samples: int = 0
    interval_s: float = math.nan
    cpu_util_mean: float = math.nan  # percent of all cores, psutil
    # CPU used by processes outside this run's tree while it trained, in percent of one core:
    # a busy neighbour (another sweep, an orphan, a build) that the run's figures do not show.
    neighbour_cpu_pct: float = math.nan
    gpu_util_mean: float = math.nan  # NVML utilization.gpu: share of time any kernel ran
    gpu_util_max: float = math.nan
    gpu_mem_max_mb: float = math.nan
    gpu_power_mean_w: float = math.nan
    gpu_sm_clock_mean_mhz: float = math.nan
    gpu_sm_activity_mean: float = math.nan  # NVML GPM (Hopper+): share of SM cycles with work, percent
    gpu_sm_occupancy_mean: float = math.nan  # NVML GPM: resident warps over the maximum, percent
    gpu_energy_j: float = math.nan  # NVML's energy counter over the whole child
    cpu_energy_j: float = math.nan  # RAPL packages over the whole child, where readable
    gpu_energy_train_j: float = math.nan  # over the training window only
    cpu_energy_train_j: float = math.nan
    # The training process's threads, from /proc/<pid>/task/*/schedstat and stat, over the
    # training window (its DataLoader workers are other processes, not counted here).
    runqueue_wait_s: float = math.nan  # summed over its threads: time runnable but waiting for a core
    os_threads_max: float = math.nan  # its threads (every pool, not only OpenMP's), at most
    runnable_max: float = math.nan  # most of them running or waiting for a core at one sample
    runnable_mean: float = math.nan
    sched_note: str = ""  # why the figures above are NaN, where they are


@dataclass(frozen=True)
class SyscallCount:
    syscall: str
    calls: int
    errors: int
    seconds: float  # strace -c: its estimate of system time in the call (futex's includes sleeps); perf: wall time


@dataclass(frozen=True)
class SyscallTable:
    """The syscalls of a separate diagnostic run of the same spec under a tracer; never the
    timed run, which tracing would slow. The table covers the whole child tree, torch's
    import and set-up included; `steps` is what that run trained."""

    tool: str  # the command that counted: "strace -c -f" or "perf trace -s"
    counts: tuple[SyscallCount, ...]  # most seconds first
    steps: int = 0
    real_s: float = math.nan  # the traced run's wall time

    def top(self, n: int = 5) -> tuple[SyscallCount, ...]:
        return self.counts[:n]


@dataclass(frozen=True)
class RunSeries:
    """The raw samples behind a record, stored beside it: derive statistics from these."""

    step_ms: list[float] = field(default_factory=list)  # every step's wall time, warm-up included
    monitor: list[dict[str, float]] = field(default_factory=list)  # outside samples, `t` in s
    step_samples: list[int] = field(default_factory=list)  # the samples in each step
    excluded_steps: list[int] = field(default_factory=list)  # 0-based, besides warm-up (profiled)
    rank_step_ms: list[list[float]] = field(default_factory=list)  # several ranks: each one's step times
    allreduce_ms: list[list[float]] = field(default_factory=list)  # ... and each one's all-reduce per step
    monitor_t0_unix: float = math.nan  # the Unix time of the monitor's `t` = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunRecord:
    spec: RunSpec
    run_id: str
    started_at: str
    status: str = OK
    reason: str = ""
    repeat: int = 0
    sweep: str = ""
    data: DataInfo | None = None
    process: ProcessUsage | None = None
    train: TrainMetrics | None = None
    monitor: MonitorSummary = field(default_factory=MonitorSummary)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    bottleneck: str = ""  # input pipeline, host launch overhead, compute, synchronization, gradient all-reduce
    bottleneck_note: str = ""  # the finding with its numbers and the knobs that address it
    # Several ranks: samples/s over (world size x samples/s of one rank at the same per-rank batch),
    # against the median of this host's one-rank runs of the same configuration in the folder.
    scaling_efficiency: float = math.nan
    single_rank_samples_per_s: float = math.nan
    syscalls: SyscallTable | None = None  # --syscalls: a traced diagnostic run of the same spec

    @property
    def oversubscribed(self) -> bool | None:
        """More intra-op threads, over this host's ranks, than cores they may use; None where either
        is unknown."""
        threads = self.spec.threads or self.fingerprint.get("torch_threads")
        cores = self.fingerprint.get("usable_cores") or self.fingerprint.get("logical_cores")
        if not isinstance(threads, int) or not isinstance(cores, int) or cores < 1:
            return None
        return threads * self.spec.nproc_per_node > cores

    def to_row(self) -> dict[str, Any]:
        """One flat JSON-ready dict; columns are documented in docs/columns.md."""
        row: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "spec_key": self.spec.key(),
            "repeat": self.repeat,
            "sweep": self.sweep,
            "started_at": self.started_at,
            "status": self.status,
            "reason": self.reason,
        }
        row.update(self.spec.to_dict())
        row.update({"world_size": self.spec.world_size, "global_batch": self.spec.global_batch})
        row.update(_data_columns(self.data))
        row.update(_process_columns(self.process))
        row.update(_train_columns(self.train))
        row.update(dataclasses.asdict(self.monitor))
        row.update(_energy_columns(self))
        row.update({"bottleneck": self.bottleneck, "bottleneck_note": self.bottleneck_note})
        if self.spec.world_size > 1:
            row.update({"scaling_efficiency": self.scaling_efficiency,
                        "single_rank_samples_per_s": self.single_rank_samples_per_s})
        row["oversubscribed"] = self.oversubscribed
        row.update(_syscall_columns(self.syscalls))
        row.update({f"fp_{k}": v for k, v in sorted(self.fingerprint.items())})
        return {k: finite(v) for k, v in row.items()}


def _data_columns(data: DataInfo | None) -> dict[str, Any]:
    if data is None:
        return {}
    # The spec's `data` is already resolved (never auto); data_source names the exact set.
    return {"data_source": data.source, "data_samples": data.samples, "data_repeat": data.repeat,
            "data_images": data.images or None, "data_digest": data.digest or None, "data_path": data.path or None}


def _process_columns(process: ProcessUsage | None) -> dict[str, Any]:
    if process is None:
        return {}
    row = dataclasses.asdict(process)
    row["cpu_pct"] = process.cpu_pct
    return row


def _train_columns(train: TrainMetrics | None) -> dict[str, Any]:
    """The metrics as columns: the step split's prefixed `split_`, the other sub-records'
    fields (already named for their columns) as they are."""
    if train is None:
        return {}
    row = dataclasses.asdict(train)
    row.update({f"split_{k}": v for k, v in row.pop("split").items()})
    for part in TRAIN_PARTS[1:]:
        row.update(row.pop(part))
    return row


def _syscall_columns(table: SyscallTable | None) -> dict[str, Any]:
    if table is None:
        return {}
    return {"syscall_tool": table.tool, "syscall_steps": table.steps, "syscall_real_s": table.real_s,
            "syscalls": [dataclasses.asdict(count) for count in table.counts]}


TRAIN_PARTS = ("split", "compile", "profile", "usage", "ranks")  # TrainMetrics' sub-records


def _energy_columns(record: RunRecord) -> dict[str, Any]:
    """Energy per epoch (of `spec.samples` samples) and per sample over the training window, GPU
    (NVML) and CPU (RAPL)."""
    train = record.train
    if train is None or not train.samples_seen:
        return {}
    epochs = train.samples_seen / record.spec.samples  # an epoch --steps cut short counts for the share it ran
    row = {}
    for part, joules in (("gpu", record.monitor.gpu_energy_train_j), ("cpu", record.monitor.cpu_energy_train_j)):
        row[f"{part}_energy_per_epoch_j"] = joules / epochs
        row[f"{part}_energy_per_sample_mj"] = 1e3 * joules / train.samples_seen
    return row


def last_epoch_cut_short(row: Mapping[str, Any]) -> bool:
    """Whether `--steps` ended a run's last epoch early, so its loss covers only its steps: as
    the record says, or, for a record from before it said, as its steps and epochs tell."""
    said = row.get("last_epoch_partial")
    if isinstance(said, bool):
        return said
    spec = RunSpec.from_dict(row)
    done = row.get("steps_done")
    if spec.steps is None or not isinstance(done, int | float):
        return False
    return done < spec.epochs * spec.steps_per_epoch


# Checking a row read back from disk ----------------------------------------------------------

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""A run id names files (`series/<run_id>.json`): letters, digits, `_`, `.`, `-`, no leading dot."""

IDENTITY_TYPES: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "run_id": (str,),
    "spec_key": (str,),
    "repeat": (int,),
    "status": (str,),
}
"""Columns every record has, never null: without them a line cannot be grouped, resumed or compared."""


def _json_kinds(hint: Any) -> tuple[type, ...]:
    """The JSON types a column annotated `hint` may hold (None is always allowed for metrics)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(kind for arg in typing.get_args(hint) if arg is not type(None) for kind in _json_kinds(arg))
    origin = typing.get_origin(hint) or hint
    if origin is float:
        return (int, float)  # JSON writes 2.0 as 2.0, but a hand-made or older row may hold 2
    if origin in (int, str, bool, list, dict):
        return (origin,)
    return (object,)


def _columns_of(cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, tuple[type, ...]]:
    hints = typing.get_type_hints(cls)
    return {f"{prefix}{f.name}": _json_kinds(hints[f.name]) for f in dataclasses.fields(cls) if f.name not in skip}


COLUMN_TYPES: dict[str, tuple[type, ...]] = {
    **IDENTITY_TYPES,
    "sweep": (str,),
    "started_at": (str,),
    "reason": (str,),
    **{name: _json_kinds(kind) for name, kind in FIELD_TYPES.items()},
    "data_source": (str,),
    "data_samples": (int,),
    "data_repeat": (int, float),
    "data_images": (int,),
    "data_digest": (str,),
    "data_path": (str,),
    "world_size": (int,),
    "global_batch": (int,),
    **_columns_of(ProcessUsage),
    "cpu_pct": (int, float),
    **_columns_of(TrainMetrics, skip=TRAIN_PARTS),
    **_columns_of(StepSplit, prefix="split_"),
    **{name: kinds for part in (CompileStats, ProfileStats, TrainUsage, RankStats)
       for name, kinds in _columns_of(part).items()},
    **_columns_of(MonitorSummary),
    **{f"{part}_energy_{what}": (int, float) for part in ("gpu", "cpu") for what in ("per_epoch_j", "per_sample_mj")},
    "bottleneck": (str,),
    "bottleneck_note": (str,),
    "scaling_efficiency": (int, float),
    "single_rank_samples_per_s": (int, float),
    "oversubscribed": (bool,),
    "syscall_tool": (str,),
    "syscall_steps": (int,),
    "syscall_real_s": (int, float),
    "syscalls": (list,),
}
"""The JSON type(s) of every column a record may hold, from the dataclasses that write them."""

RUN_COLUMNS: tuple[str, ...] = tuple(COLUMN_TYPES)
"""Every column a row may hold besides the `fp_*` fingerprint; failed runs leave metrics empty."""

REQUIRED_COLUMNS: tuple[str, ...] = (*IDENTITY_TYPES, *(f for f in SPEC_FIELDS if f not in LATER_FIELDS))


def run_id_problem(run_id: object) -> str | None:
    """Why `run_id` cannot name a run's files, or None."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        return (f"run_id {_short(run_id)} is not a valid run id (letters, digits, '_', '.' and '-', "
                "at most 128, not starting with a dot)")
    return None


def record_problem(row: object) -> str | None:
    """The first reason `row` (a parsed JSON line) is not a record this version can read, or None.

    Identity columns must be present and non-null; every other known column may be null
    (a measurement that was not taken) but otherwise holds its dataclass field's type.
    Columns this version does not know (and `fp_*`) are let through.
    """
    if not isinstance(row, Mapping):
        return f"a record is a JSON object, got {type(row).__name__}"
    missing = [name for name in REQUIRED_COLUMNS if name not in row]
    if missing:
        return f"missing {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}"
    version = row["schema_version"]
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return f"schema version {version} was written by a newer vaebench (this one reads {SCHEMA_VERSION})"
    for name, kinds in COLUMN_TYPES.items():
        value = row.get(name)
        if value is None:
            if name in IDENTITY_TYPES:
                return f"{name} is null"
            continue
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            expected = " or ".join(kind.__name__ for kind in kinds)
            return f"{name} should be {expected}, got {json_type(value)} {_short(value)}"
    if row["schema_version"] < 1:
        return f"schema_version must be 1 or more, got {row['schema_version']}"
    if row["repeat"] < 0:
        return f"repeat must be 0 or more, got {row['repeat']}"
    if row["status"] not in (OK, FAILED):
        return f"status must be {OK!r} or {FAILED!r}, got {_short(row['status'])}"
    return run_id_problem(row["run_id"])


def json_type(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
