"""The terminal summary of one run: what a user reads right after `vaebench run`."""

from __future__ import annotations

import math

from .._format import amount, counted, fmt
from ..result import OK, RunRecord, SyscallTable, TrainMetrics
from ..rules import NEIGHBOUR_LIMIT_PCT, contended
from .kernel import counters, verdict


def format_run(record: RunRecord, results_path: str = "") -> str:
    spec = record.spec
    head = f"run {record.run_id}  {spec.display_label()}"
    lines = [head]
    if record.data is not None:
        lines.append(
            f"  data      {record.data.source}, {record.data.samples} samples/epoch "
            f"(x{record.data.repeat:g} of the source)"
        )
    if record.status != OK:
        lines.append(f"  FAILED    {record.reason}")
    usage = record.process
    if usage is not None:
        lines.append(
            f"  time      real {usage.real_s:.3f} s   user {usage.user_s:.3f} s   sys {usage.sys_s:.3f} s"
            f"   %CPU {usage.cpu_pct:.0f}%   peak RSS {usage.peak_rss_mb:.0f} MB"
        )
    sandbox = record.fingerprint.get("sandbox")
    if sandbox:
        lines.append(
            f"  sandbox   {sandbox}: sys time and context switches are the sandbox's own accounting, "
            "not the host kernel's"
        )
    train = record.train
    if train is not None:
        lines.append(
            f"  speed     {fmt(train.samples_per_s, '{:.0f} samples/s')} steady "
            f"(median step {fmt(train.step_median_ms, '{:.3f} ms')}, IQR {fmt(train.step_iqr_ms, '{:.3f} ms')}, "
            f"{counted(train.steps_done, 'step')}, {train.warmup_steps} warm-up)"
        )
        lines.append(
            f"  phases    import {train.t_import_s:.2f} s, data {train.t_data_s:.2f} s, "
            f"model {train.t_model_s:.2f} s, first step {train.t_first_step_s * 1e3:.1f} ms, "
            f"training {train.train_s:.2f} s"
        )
        split = train.split
        step = sum(v for v in (split.data_ms, split.copy_ms, split.compute_ms, split.sync_ms) if not math.isnan(v))
        if step > 0:
            parts = [("data wait", split.data_ms), ("copy", split.copy_ms), ("compute", split.compute_ms),
                     ("sync", split.sync_ms)]
            lines.append("  step      " + ", ".join(f"{name} {v:.3f} ms ({100 * v / step:.0f}%)" for name, v in parts))
        if not math.isnan(split.device_compute_ms):
            lines.append(
                f"  device    copy {split.device_copy_ms:.3f} ms, compute {split.device_compute_ms:.3f} ms per step "
                "(CUDA events)"
            )
        losses = ", ".join(f"{loss:.2f}" for loss in train.epoch_losses)
        partial = " (the last cut short by --steps: its loss covers only its steps)" if train.last_epoch_partial else ""
        lines.append(f"  loss      per epoch: {losses}{partial}")
        lines.append(
            f"  FLOP/s    {fmt(train.model_flops_per_s / 1e9, '{:.1f} GFLOP/s')} achieved, "
            f"{fmt(100 * train.flops_frac, '{:.1f}%')} of the measured matmul peak "
            f"{fmt(train.peak_flops_per_s / 1e9, '{:.0f} GFLOP/s')}"
        )
        lines.extend(_rank_lines(record))
        lines.extend(_compile_lines(train))
        lines.extend(_profile_lines(train))
        lines.extend(f"  WARNING   {warning}" for warning in train.warnings)
    monitor = record.monitor
    if not math.isnan(monitor.gpu_util_mean):
        lines.append(
            f"  GPU       utilization.gpu (NVML: share of time any kernel ran, not efficiency) "
            f"mean {monitor.gpu_util_mean:.0f}%, max {monitor.gpu_util_max:.0f}%; "
            f"memory {fmt(monitor.gpu_mem_max_mb, '{:.0f} MB')}, "
            f"power {fmt(monitor.gpu_power_mean_w, '{:.0f} W')}, energy {fmt(monitor.gpu_energy_j, '{:.0f} J')}"
        )
    if not math.isnan(monitor.cpu_util_mean):
        outside = monitor.neighbour_cpu_pct
        lines.append(
            f"  CPU       {monitor.cpu_util_mean:.0f}% of all cores on average while it trained "
            f"({counted(monitor.monitor_samples, 'sample')} taken in all)"
            + ("" if math.isnan(outside) else f"; outside this run: {outside:.0f}% of a core while it trained")
        )
    lines.extend(neighbour_warning(monitor.neighbour_cpu_pct))
    lines.extend(_energy_lines(record))
    lines.extend(_kernel_lines(record))
    if record.syscalls is not None:
        lines.extend(syscall_lines(record.syscalls))
    if record.bottleneck_note:
        lines.append(f"  verdict   {record.bottleneck_note}")
    if results_path:
        lines.append(f"  saved     {results_path}")
    return "\n".join(lines)


def neighbour_warning(neighbour_cpu_pct: float) -> list[str]:
    """The warning for a run measured beside a busy neighbour, or nothing."""
    if not contended(neighbour_cpu_pct):
        return []
    return [
        f"  WARNING   processes outside this run used {neighbour_cpu_pct:.0f}% of a core while it trained "
        f"(limit {NEIGHBOUR_LIMIT_PCT:.0f}%): its speed is not its own; another sweep, an orphaned run or any "
        "busy process slows it (compare calls such runs inconclusive)"
    ]


def _rank_lines(record: RunRecord) -> list[str]:
    spec, train = record.spec, record.train
    if train is None or spec.world_size == 1:
        return []
    ranks = train.ranks
    steps = ", ".join(f"{ms:.2f}" for ms in ranks.rank_step_median_ms)
    lines = [
        f"  ranks     {spec.world_size} x batch {spec.batch_size} = global batch {spec.global_batch} "
        f"({'nccl' if spec.is_cuda else 'gloo'}, {counted(spec.nnodes, 'host')}); median step per rank {steps} ms; "
        f"gradient all-reduce {fmt(ranks.allreduce_ms, '{:.3f} ms')} per step, inside compute "
        f"({fmt(100 * ranks.allreduce_share, '{:.0f}%')} of the step)"
    ]
    if math.isnan(record.scaling_efficiency):
        lines.append("  scaling   efficiency n/a: no one-rank run of this configuration on this host in the folder")
    else:
        lines.append(
            f"  scaling   efficiency {record.scaling_efficiency:.2f}: {train.samples_per_s:.0f} samples/s on "
            f"{spec.world_size} ranks vs {spec.world_size} x {record.single_rank_samples_per_s:.0f} of one rank"
        )
    return lines


def _compile_lines(train: TrainMetrics) -> list[str]:
    c = train.compile
    if math.isnan(c.compile_s):
        return []
    pays = f"pays back after {counted(c.compile_payback_steps, 'step')}" if not math.isnan(c.compile_payback_steps) \
        else "no payback"
    lines = [
        f"  compile   {c.compile_s:.1f} s, {counted(c.compile_graphs, 'graph')}, {counted(c.recompiles, 'recompile')}, "
        f"{c.compile_cache or 'no'} cache; eager step {fmt(c.eager_step_ms, '{:.3f} ms')} vs compiled "
        f"{fmt(c.compiled_step_ms, '{:.3f} ms')} (without data wait): {pays}"
    ]
    lines.extend(f"  WARNING   {warning}" for warning in c.compile_warnings)
    return lines


def _profile_lines(train: TrainMetrics) -> list[str]:
    p = train.profile
    if not p.profile_trace:
        return []
    underfilled = (f", {100 * p.profile_underfilled_share:.0f}% of kernel time in grids smaller than the GPU"
                   if math.isfinite(p.profile_underfilled_share) else "")
    kernels = (f"{fmt(p.profile_kernels_per_step, '{:.1f}')} kernels/step{underfilled}, "
               if p.profile_kernels_per_step > 0 else "")  # a CPU trace has no kernels to count
    return [
        f"  profile   trace {p.profile_trace} (open in ui.perfetto.dev); busy "
        f"{fmt(100 * p.profile_busy_fraction, '{:.1f}%')} [{p.profile_busy_source}] "
        f"({fmt(p.profile_busy_ms_per_step, '{:.3f}')} ms per step), "
        f"{kernels}profiler overhead {fmt(p.profile_overhead_pct, '{:.1f}%')}"
    ]


def _energy_lines(record: RunRecord) -> list[str]:
    lines = []
    train, monitor = record.train, record.monitor
    for name, joules, source in (("GPU", monitor.gpu_energy_train_j, "NVML energy counter"),
                                 ("CPU", monitor.cpu_energy_train_j, "RAPL packages")):
        if train is not None and not math.isnan(joules) and train.samples_seen:
            epochs = max(len(train.epoch_losses), 1)
            lines.append(
                f"  energy    {name} {joules:.1f} J while training ({source}): {joules / epochs:.1f} J/epoch, "
                f"{1e3 * joules / train.samples_seen:.3f} mJ/sample"
            )
    return lines


def _kernel_lines(record: RunRecord) -> list[str]:
    """The "kernel time" line: sys/user and the counters per step over the training window, the
    run-queue wait, and the cause they point to (`analysis.kernel`)."""
    found = counters(record.to_row())
    if found is None:
        return []
    per_step = found.per_step
    queue = found.runqueue_ms_per_step
    wait = f"run-queue wait {queue:.1f} ms/step" if math.isfinite(queue) else "run-queue wait n/a"
    threads = counted(found.threads, "thread") if math.isfinite(found.threads) else \
        "default threads"
    cores = f" on {counted(found.cores, 'core')}" if math.isfinite(found.cores) else ""
    over = " (oversubscribed)" if found.oversubscribed else ""
    lines = [
        f"  kernel    sys/user {fmt(found.sys_user, '{:.2f}')}, "
        f"{counted(per_step(found.minor_faults), 'minor fault')}/step, "
        f"{counted(per_step(found.switches), 'context switch', rate=True)}/step "
        f"({amount(per_step(found.voluntary), rate=True)} voluntary), "
        f"{wait}; {threads}{cores}{over}"
    ]
    monitor = record.monitor
    if math.isfinite(monitor.os_threads_max):
        lines[0] += (f"; {counted(monitor.os_threads_max, 'OS thread')}, at most {monitor.runnable_max:.0f} "
                     "runnable at once")
    if monitor.sched_note:
        lines.append(f"            ({monitor.sched_note})")
    lines.append(f"            cause: {verdict(found)}")
    return lines


def syscall_lines(table: SyscallTable, top: int = 5) -> list[str]:
    """The top calls of a `--syscalls` diagnostic run, by seconds."""
    if not table.counts:
        return [f"  syscalls  {table.tool}: the tracer wrote no table"]
    calls = sum(c.calls for c in table.counts)
    seconds = sum(c.seconds for c in table.counts)
    head = (f"  syscalls  {table.tool}, a separate traced run ({counted(table.steps, 'step')}, "
            f"{fmt(table.real_s, '{:.1f} s')}, "
            f"import included): {counted(calls, 'call')}, {seconds:.2f} s in all; top by seconds:")
    rows = [f"            {c.syscall:<16} {c.calls:>10,} calls  {c.errors:>8,} errors  {c.seconds:8.3f} s"
            for c in table.top(top)]
    note = seconds_note(table.tool)
    return [head, *rows, *([f"            ({note})"] if note else [])]


def seconds_note(tool: str) -> str:
    """What the seconds of a `--syscalls` table are, by the tracer that counted them; '' if unknown."""
    if tool.startswith("strace"):
        return ("strace's seconds estimate the kernel time in each call, but futex's include the time threads "
                "slept in it waiting to be woken: not CPU time, so they can pass the run's sys time")
    if tool.startswith("perf"):
        return "perf's seconds are wall time in each call, sleeps included: not CPU time"
    return ""
