"""One measured run: a fresh child process, watched from outside, recorded on disk.

The parent never imports torch for a CPU run. It sets the thread variables in the child's
environment, starts the outside monitor, waits for the child with `wait4` (so the whole
process tree's CPU time is counted), and appends one record, ok or failed, to the results
folder. A crash, an out-of-memory error or a timeout becomes a failed record, never a
lost or torn one. A data-parallel run is the same with torchrun in the child's place
(`launch`): the tree is torchrun and every rank.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import storage
from ..analysis.attribution import Evidence, attribute
from ..errors import STOPS, Interrupted, UsageError, signal_of
from ..machine import capabilities, host_fingerprint, usable_cores
from ..protocol import Answer, Request
from ..result import FAILED, OK, DataInfo, RunRecord, RunSeries, SyscallTable, TrainMetrics
from ..rules import SAMPLE_HZ, scaling_efficiency, single_rank_rate
from ..spec import Capabilities, RunSpec, validate
from .child_env import child_process_env
from .data import DataUnavailable, prepare
from .launch import (
    ONE_HOST,
    STDERR_KEPT,
    Launch,
    child_argv,
    failure_reason,
    how_it_ended,
    rank_answers,
    root_cause,
)
from .monitor import Monitor, ProcessTree, open_gpu_probe
from .occupants import SCRATCH_PREFIX
from .peak import cached_peak
from .process import run_child
from .rapl import EnergyMeter
from .syscalls import Tracer, trace


@dataclass(frozen=True)
class RunOptions:
    """How to run and where to keep the result; none of it changes the numbers."""

    out: Path
    timeout: float | None = None
    sample_hz: float = SAMPLE_HZ  # outside monitor rate
    progress: bool = False  # a progress bar on the terminal's stderr
    sweep: str = ""
    repeat: int = 0
    label: str = ""
    measure_peak: bool = True
    launch: Launch = ONE_HOST  # several hosts: this one's node rank and the rendezvous
    shared: bool = False  # a folder many hosts write at once (cluster jobs): one file per record
    tracer: Tracer | None = None  # also a traced diagnostic run of the same spec, for its syscall table
    allocator_path: str = ""  # --allocator-path: the library for --allocator, where ldconfig does not know it


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def run_once(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
    run_id = new_run_id()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    peak = cached_peak(spec, measure=options.measure_peak, allocator_path=options.allocator_path)
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX) as tmp:
        request = Path(tmp) / "request.json"
        result = Path(tmp) / "result.json"
        _request(spec, data, options, run_id, result).write(request)
        rapl = EnergyMeter()
        rapl.start()
        # This process and the child's: the rest of the machine's CPU is a neighbour's.
        tree = ProcessTree(descendants=spec.world_size > 1)
        monitor = Monitor(1.0 / options.sample_hz, gpu=open_gpu_probe(spec.device),
                          cpu_energy=rapl.sample if rapl.available else None, tree=tree)

        def watch_child(pid: int) -> None:
            tree.track(pid)
            if spec.world_size == 1:  # the training process's threads; the ranks are several processes: none
                monitor.watch(pid)

        env = child_process_env(spec, options.allocator_path)
        with monitor:
            exit_ = run_child(child_argv(spec, request, options.launch), env=env,
                              timeout=options.timeout, keep_stderr=STDERR_KEPT if spec.world_size > 1 else 0,
                              on_start=watch_child, folder=options.out, scratch=Path(tmp))
        answer = Answer.read(result)
        ranks = rank_answers(Path(tmp)) if spec.world_size > 1 else {}

    status, reason = OK, ""
    train = None
    if exit_.timed_out:
        status, reason = FAILED, f"timeout: killed after {options.timeout:g} s"
        if spec.world_size > 1:  # rusage counts only the children a process waited for
            reason += "; user and sys miss the ranks' CPU time, killed before torchrun could wait for them"
    elif answer is None and options.launch.node_rank > 0 and exit_.usage.exit_code == 0:
        pass  # rank 0, whose answer the run's record is, trains on node 0; this node's ranks ended cleanly
    elif answer is None and spec.world_size > 1:
        status, reason = FAILED, failure_reason(spec.world_size, root_cause(exit_.stderr_tail), ranks,
                                                exit_.usage.exit_code)
    elif answer is None:
        status, reason = FAILED, _death_reason(exit_.usage.exit_code)
    elif not answer.ok or answer.metrics is None:
        status, reason = FAILED, answer.reason or "failed without a reason"
    else:
        per_rank = answer.metrics.model_flops_per_s / spec.world_size
        if per_rank > peak:  # the cached peak was measured under load: measure it again, now
            peak = cached_peak(spec, measure=options.measure_peak, allocator_path=options.allocator_path,
                               at_least=per_rank)
        train = _with_peak(answer.metrics, peak * parallel_ranks(spec, usable_cores()))
    usage = exit_.usage
    if answer is not None and not math.isnan(answer.main_cpu_s):
        usage = dataclasses.replace(usage, main_cpu_s=answer.main_cpu_s)
    summary = monitor.summary(*((train.train_start_unix, train.train_end_unix, train.t_first_step_s) if train else ()))
    if spec.world_size > 1 and not summary.sched_note:
        summary = dataclasses.replace(summary, sched_note=f"not measured over {spec.world_size} ranks: the scheduler "
                                      "figures follow one training process's threads")
    fingerprint = host_fingerprint()
    if answer is not None:
        fingerprint.update(answer.runtime)
    single = math.nan
    if train is not None and spec.world_size > 1:
        single = single_rank_rate(storage.rows_if_any(options.out), spec, fingerprint.get("hostname", ""))
    record = _with_bottleneck(RunRecord(
        spec=spec,
        run_id=run_id,
        started_at=started,
        status=status,
        reason=reason,
        repeat=options.repeat,
        sweep=options.sweep,
        data=data,
        process=usage,
        train=train,
        monitor=summary,
        fingerprint=fingerprint,
        scaling_efficiency=scaling_efficiency(train.samples_per_s, spec.world_size, single) if train else math.nan,
        single_rank_samples_per_s=single,
    ))
    series = RunSeries(step_ms=answer.step_ms if answer else [], monitor=monitor.samples,
                       step_samples=answer.step_samples if answer else [],
                       excluded_steps=answer.excluded_steps if answer else [],
                       rank_step_ms=answer.rank_step_ms if answer else [],
                       allreduce_ms=answer.allreduce_ms if answer else [], monitor_t0_unix=monitor.t0_unix)
    if options.tracer is not None:
        try:
            record = dataclasses.replace(record, syscalls=traced_run(options.tracer, spec, data, options, run_id))
        except STOPS as stop:  # the timed run finished: it is kept, with no syscall table
            _store(record, series, options)
            raise Interrupted(signal_of(stop), "interrupted during the --syscalls diagnostic run; what finished is "
                              f"kept: the timed run, in {options.out}, without a syscall table") from None
    _store(record, series, options)
    return record


def _store(record: RunRecord, series: RunSeries, options: RunOptions) -> None:
    if options.launch.node_rank > 0:
        return  # rank 0 is on node 0, and so is the run's record
    if options.shared:
        storage.write_record(options.out, record, series)
    else:
        storage.append(options.out, record, series)


def _request(spec: RunSpec, data: DataInfo, options: RunOptions, run_id: str, result: Path) -> Request:
    """What the training child reads: the spec, the data, where to write."""
    return Request(spec=spec, data=data, out=str(options.out), run_id=run_id, result=str(result),
                   progress=options.progress, label=options.label)


def traced_run(tracer: Tracer, spec: RunSpec, data: DataInfo, options: RunOptions, run_id: str) -> SyscallTable:
    """The same spec again under the tracer (`--syscalls`): a diagnostic run whose files stay in
    a temporary folder and whose timings are thrown away; only its syscall table is kept."""
    with tempfile.TemporaryDirectory(prefix="vaebench-traced-") as tmp:
        result = Path(tmp) / "result.json"
        traced = dataclasses.replace(options, out=Path(tmp), progress=False)
        request = Path(tmp) / "request.json"
        _request(spec, data, traced, f"{run_id}-traced", result).write(request)
        exit_, counts = trace(tracer, child_argv(spec, request, options.launch),
                              env=child_process_env(spec, options.allocator_path), timeout=options.timeout)
        answer = Answer.read(result)
    steps = answer.metrics.steps_done if answer is not None and answer.metrics is not None else 0
    return SyscallTable(tool=tracer.name, counts=counts, steps=steps, real_s=exit_.usage.real_s)


def _with_bottleneck(record: RunRecord) -> RunRecord:
    """The record with what bounds the run, judged from its own columns as the report judges a
    configuration's medians."""
    train = record.train
    if train is None or not train.warmup_steps or math.isnan(train.split.compute_ms):  # uninstrumented: no split
        return record
    found = attribute(Evidence.from_columns(record.to_row().get, record.spec))
    return dataclasses.replace(record, bottleneck=found.kind, bottleneck_note=str(found))


def parallel_ranks(spec: RunSpec, cores: int) -> int:
    """How many one-rank matmul peaks the ranks can reach at once: every rank its own GPU, but
    CPU ranks on one host share its cores (4 ranks of 1 thread on 2 cores reach 2 peaks)."""
    if spec.is_cuda or spec.world_size == 1:
        return spec.world_size
    per_host = min(spec.nproc_per_node, max(1, cores // max(spec.threads or 1, 1)))
    return per_host * spec.nnodes


def _with_peak(train: TrainMetrics, peak: float) -> TrainMetrics:
    frac = train.model_flops_per_s / peak if peak > 0 else math.nan
    return dataclasses.replace(train, peak_flops_per_s=peak, flops_frac=frac)


def _death_reason(exit_code: int) -> str:
    if exit_code >= 0:
        return f"crashed: {how_it_ended(exit_code)} before reporting"
    hints: dict[int, str] = {signal.SIGKILL: " (the kernel's out-of-memory killer?)",
                             signal.SIGUSR2: " (Slurm's warning of a time limit or preemption, through submitit)"}
    hint = hints.get(-exit_code, "")
    return f"crashed: {how_it_ended(exit_code)}{hint}"


class InvalidRun(UsageError):
    """The spec cannot run here; raised before anything is trained."""


def check(spec: RunSpec, caps: Capabilities | None = None, allocator_path: str = "") -> None:
    """Raise InvalidRun with every problem, one per line, or return quietly."""
    if caps is None:
        caps = capabilities(probe_torch=spec.device != "cpu", allocator_path=allocator_path)
    problems = validate(spec, caps)
    if problems:
        raise InvalidRun("; ".join(str(p) for p in problems))


def prepare_data(spec: RunSpec, data_dir: str | None, *, write: bool = True) -> tuple[RunSpec, DataInfo]:
    """Resolve `auto`, write the data's files if needed (unless `write` is off: a dry run only
    locates them), and return the spec as it will run."""
    try:
        info = prepare(spec.data, data_dir, spec.samples, write=write)
    except DataUnavailable as exc:
        raise InvalidRun(str(exc)) from None
    source = {"embedded-5k": "embedded"}.get(info.source, info.source)
    return dataclasses.replace(spec, data=source), info
