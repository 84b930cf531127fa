from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest

from vaebench.analysis import trace as tr

HOST = (1, 1)  # (pid, tid) of the training thread
OTHER = (1, 2)  # a second host thread (autograd's or a loader's)
STREAM = (0, 7)  # device 0, stream 7
STREAM2 = (0, 8)


def ev(name: str, cat: str, ts: float, dur: float, where: tuple[int, int], **args: Any) -> dict[str, Any]:
    pid, tid = where
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def step(n: int, ts: float, dur: float) -> dict[str, Any]:
    return ev(f"ProfilerStep#{n}", "user_annotation", ts, dur, HOST)


def launch(
    ts: float, correlation: int, name: str = "cudaLaunchKernel", where: tuple[int, int] = HOST
) -> dict[str, Any]:
    return ev(name, "cuda_runtime", ts, 2, where, correlation=correlation)


def kernel(ts: float, dur: float, correlation: int, where: tuple[int, int] = STREAM, **args: Any) -> dict[str, Any]:
    return ev("void gemm<...>", "kernel", ts, dur, where, correlation=correlation, **args)


# Two steps on a GPU. Step 1 launches three kernels; the last one (correlation 5) runs after
# the step's host span has ended. Step 2 launches one kernel and a CUDA graph of two, the
# second of which ends after the step. Device rows also hold an annotation span and a sync
# wait, which are not work.
GPU_TRACE = {
    "traceEvents": [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "python"}},
        step(1, 0, 100),
        step(2, 100, 100),
        launch(10, 1),
        launch(20, 2),
        launch(90, 5, where=OTHER),
        launch(110, 3),
        launch(120, 4, name="cudaGraphLaunch"),
        ev("cudaMemcpyAsync", "cuda_runtime", 1, 2, HOST, correlation=6),
        ev("cudaStreamSynchronize", "cuda_runtime", 60, 30, HOST, correlation=7),
        ev("Memcpy HtoD (Pageable -> Device)", "gpu_memcpy", 0, 10, STREAM, correlation=6),
        kernel(30, 40, 1),  # 30-70
        kernel(60, 30, 2, where=STREAM2),  # 60-90, overlaps the first on another stream
        kernel(100, 5, 5),  # 100-105, launched in step 1
        kernel(150, 20, 3),  # 150-170
        kernel(175, 20, 4),  # 175-195
        kernel(195, 15, 4),  # 195-210, adjacent to the one before, ends after step 2
        ev("ProfilerStep#1", "gpu_user_annotation", 0, 200, STREAM),
        ev("Stream Sync", "cuda_sync", 70, 20, STREAM),
        {"ph": "f", "id": 1, "pid": 0, "tid": 7, "ts": 30, "cat": "ac2g", "name": "ac2g"},
    ]
}


def test_union_length_of_disjoint_intervals_adds_them() -> None:
    assert tr.union_length([(0, 1), (2, 4)]) == 3


def test_union_length_counts_overlap_once() -> None:
    assert tr.union_length([(2, 5), (0, 3)]) == 5


def test_union_length_of_nested_intervals_is_the_outer_one() -> None:
    assert tr.union_length([(0, 10), (2, 3), (4, 5), (9, 10)]) == 10


def test_union_length_joins_adjacent_intervals() -> None:
    assert tr.union_length([(0, 1), (1, 2), (2, 3)]) == 3


def test_union_length_ignores_empty_and_reversed_intervals() -> None:
    assert tr.union_length([]) == 0
    assert tr.union_length([(5, 5), (7, 6), (1, 2)]) == 1


def test_union_length_of_a_chain_of_overlaps() -> None:
    assert tr.union_length([(0, 2), (1, 4), (3, 6), (10, 11), (10.5, 12)]) == 8


def test_clip_keeps_only_the_part_inside_the_window() -> None:
    assert tr.clip([(-5, 5), (8, 20), (30, 40)], (0, 10)) == [(0, 5), (8, 10)]


def test_load_keeps_complete_events_only(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(GPU_TRACE))
    loaded = tr.load(path)
    assert all(e["ph"] == "X" for e in loaded.events)
    assert len(loaded.events) == len(GPU_TRACE["traceEvents"]) - 2


def test_load_reads_gzipped_traces(tmp_path: Path) -> None:
    path = tmp_path / "t.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(GPU_TRACE, f)
    assert tr.load(path).has_device


def test_device_busy_fraction_is_the_union_of_kernels_and_copies_over_the_steps() -> None:
    busy = tr.busy_fraction(tr.Trace.from_dict(GPU_TRACE))
    # Window: first step start (0) to the end of the last device work (210).
    # Busy: copy 0-10, kernels 30-90, 100-105, 150-170, 175-210 -> 10+60+5+20+35 = 130.
    assert busy.kind == "device"
    assert busy.wall_ms == pytest.approx(0.210)
    assert busy.busy_ms == pytest.approx(0.130)
    assert busy.fraction == pytest.approx(130 / 210)
    assert busy.kernel_fraction == pytest.approx(120 / 210)
    assert busy.source == tr.DEVICE_SOURCE
    assert "union of kernel" in str(busy)


def test_kernels_are_counted_in_the_step_that_launched_them() -> None:
    steps = tr.kernels_per_step(tr.Trace.from_dict(GPU_TRACE))
    assert [(s.step, s.kernels, s.launches) for s in steps] == [(1, 3, 3), (2, 3, 2)]
    assert steps[0].wall_ms == pytest.approx(0.1)


def test_kernels_without_a_launch_record_are_placed_by_their_start() -> None:
    events = [step(1, 0, 100), step(2, 100, 100), kernel(10, 5, 99), kernel(150, 5, 98), kernel(500, 5, 97)]
    steps = tr.kernels_per_step(tr.Trace.from_dict(events))
    assert [s.kernels for s in steps] == [1, 1]


def test_device_time_is_attributed_to_the_op_that_launched_it() -> None:
    events = [
        step(1, 0, 100),
        ev("aten::linear", "cpu_op", 10, 50, HOST, **{"External id": 1}),
        ev("aten::addmm", "cpu_op", 15, 30, HOST, **{"External id": 2}),
        ev("aten::relu", "cpu_op", 70, 10, HOST, **{"External id": 3}),
        kernel(20, 40, 1, **{"External id": 2}),
        kernel(74, 6, 2, **{"External id": 3}),
        kernel(80, 4, 3),
    ]
    rows = {r.name: r for r in tr.op_table(tr.Trace.from_dict(events))}
    assert rows["aten::linear"].self_cpu_ms == pytest.approx(0.020)
    assert rows["aten::linear"].cpu_total_ms == pytest.approx(0.050)
    assert rows["aten::linear"].device_ms == 0
    assert rows["aten::addmm"].device_ms == pytest.approx(0.040)
    assert rows["aten::relu"].device_ms == pytest.approx(0.006)
    assert rows[tr.UNATTRIBUTED].device_ms == pytest.approx(0.004)
    top = tr.top_ops(tr.Trace.from_dict(events), n=2, by="device")
    assert [r.name for r in top] == ["aten::addmm", "aten::relu"]


# A CPU run: ops on the training thread nest (linear holds addmm) and leave gaps; a loader
# thread's op runs throughout and must not count.
CPU_TRACE = [
    step(1, 0, 50),
    step(2, 50, 50),
    ev("aten::linear", "cpu_op", 10, 30, HOST, **{"External id": 1}),
    ev("aten::t", "cpu_op", 11, 2, HOST, **{"External id": 2}),
    ev("aten::addmm", "cpu_op", 15, 20, HOST, **{"External id": 3}),
    ev("aten::relu", "cpu_op", 60, 10, HOST, **{"External id": 4}),
    ev("aten::copy_", "cpu_op", 0, 100, OTHER, **{"External id": 5}),
    ev("Optimizer.step#Adam.step", "user_annotation", 80, 15, HOST),
]


def test_cpu_trace_reports_the_main_threads_op_share_as_cpu_busy() -> None:
    busy = tr.busy_fraction(tr.Trace.from_dict(CPU_TRACE))
    assert busy.kind == "cpu"
    assert busy.source == tr.CPU_SOURCE and "CPU run" in busy.source
    assert busy.fraction == pytest.approx(40 / 100)
    assert math.isnan(busy.kernel_fraction)


def test_cpu_trace_counts_ops_on_every_thread_and_no_kernels_per_step() -> None:
    # Every thread: on a GPU run the backward's ops run on autograd's own thread.
    steps = tr.kernels_per_step(tr.Trace.from_dict(CPU_TRACE))
    assert [(s.kernels, s.launches, s.ops) for s in steps] == [(0, 0, 4), (0, 0, 1)]


def test_self_cpu_time_subtracts_direct_children_only() -> None:
    rows = {r.name: r for r in tr.op_table(tr.Trace.from_dict(CPU_TRACE))}
    assert rows["aten::linear"].self_cpu_ms == pytest.approx((30 - 2 - 20) / 1e3)
    assert rows["aten::addmm"].self_cpu_ms == pytest.approx(0.020)
    top = tr.top_ops(tr.Trace.from_dict(CPU_TRACE), n=2)
    assert [r.name for r in top] == ["aten::copy_", "aten::addmm"]
    assert tr.top_ops(tr.Trace.from_dict(CPU_TRACE), by="device") == []


def test_without_profiler_steps_the_window_spans_all_events() -> None:
    events = [ev("aten::mm", "cpu_op", 0, 10, HOST), ev("aten::mm", "cpu_op", 30, 10, HOST)]
    busy = tr.busy_fraction(tr.Trace.from_dict(events))
    assert busy.fraction == pytest.approx(20 / 40)
    assert tr.kernels_per_step(tr.Trace.from_dict(events)) == []


def test_an_empty_trace_gives_nan_not_an_error() -> None:
    summary = tr.summarize(tr.Trace.from_dict({"traceEvents": []}))
    assert math.isnan(summary.busy.fraction)
    assert math.isnan(summary.kernels_per_step)


def test_summary_takes_medians_over_steps_and_can_drop_a_trailing_stub() -> None:
    summary = tr.summarize(tr.Trace.from_dict(GPU_TRACE), top=3)
    assert summary.kernels_per_step == 3 and summary.launches_per_step == 2.5
    assert len(tr.summarize(tr.Trace.from_dict(GPU_TRACE), last_step=1).steps) == 1


def test_format_ops_prints_one_line_per_row() -> None:
    text = tr.format_ops(tr.top_ops(tr.Trace.from_dict(CPU_TRACE), n=3))
    lines = text.splitlines()
    assert len(lines) == 4 and "self CPU ms" in lines[0] and "aten::copy_" in lines[1]


# A CUDA run profiled where CUPTI did not work (a sandbox): host ops and steps, no device rows.
NO_CUPTI_TRACE = [
    step(1, 0, 50),
    step(2, 50, 50),
    ev("aten::linear", "cpu_op", 10, 30, HOST, **{"External id": 1}),
    ev("aten::relu", "cpu_op", 60, 30, HOST, **{"External id": 2}),
]


def test_a_cuda_trace_without_device_rows_has_no_busy_fraction_and_says_why() -> None:
    busy = tr.busy_fraction(tr.Trace.from_dict(NO_CUPTI_TRACE), device="cuda:0")
    assert math.isnan(busy.fraction) and math.isnan(busy.kernel_fraction) and math.isnan(busy.busy_ms)
    assert busy.kind == "device", "never the aten-op share of a CPU run"
    assert "no GPU activity" in busy.warning and "CUPTI missing?" in busy.warning
    assert busy.source == tr.NO_DEVICE_SOURCE and not tr.from_device_rows(busy.source)
    assert busy.wall_ms == pytest.approx(0.1)
    assert str(busy).startswith("busy unknown")


def test_a_cuda_trace_without_device_rows_has_no_kernel_count() -> None:
    summary = tr.summarize(tr.Trace.from_dict(NO_CUPTI_TRACE), device="cuda")
    assert summary.busy.warning
    assert math.isnan(summary.kernels_per_step) and math.isnan(summary.launches_per_step)
    assert summary.ops_per_step == 1


def test_launch_calls_without_device_rows_mark_a_gpu_trace_when_the_device_is_not_given() -> None:
    events = [*NO_CUPTI_TRACE, launch(12, 1)]
    assert math.isnan(tr.busy_fraction(tr.Trace.from_dict(events)).fraction)


def test_a_cpu_run_keeps_its_aten_op_share() -> None:
    for device in ("cpu", None):
        busy = tr.busy_fraction(tr.Trace.from_dict(CPU_TRACE), device=device)
        assert busy.kind == "cpu" and busy.fraction == pytest.approx(40 / 100) and not busy.warning
        assert not tr.from_device_rows(busy.source)
    assert tr.from_device_rows(tr.busy_fraction(tr.Trace.from_dict(GPU_TRACE), device="cuda").source)


def test_underfilled_share_is_kernel_time_in_grids_smaller_than_the_gpu() -> None:
    kernels = [
        ev("adam", "kernel", 0, 70, STREAM, **{"blocks per SM": 0.12}),
        ev("gemm", "kernel", 70, 30, STREAM, **{"blocks per SM": 2.4}),
        ev("no launch figure", "kernel", 100, 500, STREAM),
        ev("copy", "gpu_memcpy", 600, 50, STREAM, **{"blocks per SM": 0.01}),
    ]
    trace = tr.Trace.from_dict(kernels)
    assert tr.underfilled_share(trace) == pytest.approx(0.7)
    assert tr.summarize(trace).underfilled == pytest.approx(0.7)
    assert math.isnan(tr.underfilled_share(tr.Trace.from_dict(kernels[2:])))
    assert math.isnan(tr.underfilled_share(tr.Trace.from_dict(CPU_TRACE)))


H200_TOP_RUNG = Path(__file__).parents[2] / "docs/examples/nvidia-h200/lease-2/traces/20261126T082231-6f1d467f.json.gz"


def test_a_real_cupti_trace_of_the_graphed_top_rung() -> None:
    # 20 profiled steps of --cuda-graphs on an H200: fused Adam alone (16 blocks on 132 SMs) is
    # a quarter of the kernel time.
    summary = tr.summarize(tr.load(H200_TOP_RUNG), device="cuda")
    assert len(summary.steps) == 20
    assert summary.busy.busy_ms / 20 == pytest.approx(0.267, abs=0.001)
    assert summary.busy.fraction == pytest.approx(0.57, abs=0.01)
    assert summary.underfilled == pytest.approx(0.81, abs=0.01)
