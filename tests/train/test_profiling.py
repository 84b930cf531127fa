from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vaebench.analysis import trace as tr
from vaebench.train.profiling import ProfileSummary, ProfileWindow, overhead_pct


class FakeClock:
    def __init__(self, steps_s: list[float]) -> None:
        self.now = 0.0
        self.steps = iter(steps_s)

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += next(self.steps)


def train(window: ProfileWindow, steps: int) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 32))
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(8, 32)
    with window:
        for _ in range(steps):
            optimizer.zero_grad()
            loss = (model(x) - x).pow(2).sum()
            loss.backward()
            loss.item()
            optimizer.step()
            window.step()


def test_overhead_is_the_profiled_median_over_the_unprofiled_one() -> None:
    assert overhead_pct([11.0, 12.0, 13.0], 10.0) == pytest.approx(20.0)
    assert math.isnan(overhead_pct([], 10.0))
    assert math.isnan(overhead_pct([1.0], math.nan))


def test_window_times_each_step_and_knows_which_it_profiles(tmp_path: Path) -> None:
    clock = FakeClock([0.010, 0.020, 0.030])
    # start_after beyond the run: the profiler never starts, so no torch is needed.
    window = ProfileWindow(tmp_path, "r", "cpu", steps=3, start_after=10, warmup=1, clock=clock)
    with window:
        for _ in range(3):
            clock.tick()
            window.step()
    assert window.step_ms == pytest.approx([10.0, 20.0, 30.0])
    assert window.profiled_steps == range(11, 15)
    assert window.recorded_steps == range(12, 15)
    assert window.summary() is None
    assert not (tmp_path / "traces").exists()


def test_profiled_cpu_run_writes_a_trace_that_loads_and_the_ops_tables(tmp_path: Path) -> None:
    window = ProfileWindow(tmp_path, "run-1", "cpu", steps=3, start_after=2)
    train(window, 9)
    trace_path = tmp_path / "traces" / "run-1.json"
    data = json.loads(trace_path.read_text())
    names = {e.get("name") for e in data["traceEvents"]}
    assert {"ProfilerStep#1", "ProfilerStep#2", "ProfilerStep#3"} <= names
    assert "ProfilerStep#4" not in names and "aten::addmm" in names
    ops = (tmp_path / "traces" / "run-1-ops.txt").read_text()
    assert "Self CPU" in ops and "aten::" in ops

    summary = window.summary()
    assert summary is not None
    assert summary.steps == 3 and summary.trace_path == str(trace_path)
    assert summary.trace.busy.kind == "cpu" and "CPU run" in summary.busy_source
    assert 0 < summary.busy_fraction <= 1
    assert summary.busy_ms_per_step == pytest.approx(summary.trace.busy.busy_ms / 3) and summary.busy_ms_per_step > 0
    assert summary.kernels_per_step == 0 and summary.trace.ops_per_step > 10
    assert summary.trace.top_cpu and summary.trace.top_cpu[0].self_cpu_ms > 0
    assert len(window.step_ms) == 9 and window.profiled_steps == range(3, 7)
    assert summary.step_ms_outside == pytest.approx(sorted(window.step_ms[6:])[1])
    assert math.isfinite(summary.overhead_pct)
    assert "profiler overhead" in str(summary)


def test_the_overhead_compares_the_loops_own_step_times_where_given(tmp_path: Path) -> None:
    # The H200's graphed, compiled-Adam run: the host ran ahead of the device, so the window's
    # host clock read its profiled steps faster than the loop's device-timed ones (-19% overhead).
    window = ProfileWindow(tmp_path, "run-2", "cpu", steps=3, start_after=2)
    train(window, 9)
    device_ms = [5.0, 1.0, 9.0, 1.3, 1.2, 1.1, 1.0, 1.0, 1.0]  # step 3 warms the profiler up; 4-6 recorded
    summary = window.summary(outside_step_ms=1.0, step_ms=device_ms)
    assert summary is not None and summary.step_ms_inside == pytest.approx(1.2)
    assert summary.overhead_pct == pytest.approx(20.0)
    assert window.summary(step_ms=device_ms).step_ms_outside == pytest.approx(1.0)  # type: ignore[union-attr]


def test_a_run_that_ends_inside_the_window_keeps_its_recorded_steps(tmp_path: Path) -> None:
    window = ProfileWindow(tmp_path, "short", "cpu", steps=5, start_after=1)
    train(window, 4)  # step 2 is the profiler's warm-up; steps 3 and 4 are recorded
    summary = window.summary(outside_step_ms=1.0)
    assert summary is not None
    assert [s.step for s in summary.trace.steps] == [1, 2]
    assert all(s.ops > 0 for s in summary.trace.steps)
    assert tr.load(summary.trace_path).events


def test_summary_of_a_gpu_trace_without_device_rows_warns_instead_of_a_busy_figure() -> None:
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1, "ts": 0, "dur": 50},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 5, "dur": 40},
    ]
    summary = ProfileSummary(
        trace_path="t.json",
        ops_path="t-ops.txt",
        steps=1,
        trace=tr.summarize(tr.Trace.from_dict(events), device="cuda"),
        step_ms_inside=1.0,
        step_ms_outside=1.0,
        overhead_pct=0.0,
    )
    assert math.isnan(summary.busy_fraction) and math.isnan(summary.kernels_per_step)
    assert math.isnan(summary.busy_ms_per_step)
    assert summary.busy_source == tr.NO_DEVICE_SOURCE and "CUPTI missing?" in summary.busy_warning
    text = str(summary)
    assert "WARNING: the trace had no GPU activity" in text
    assert "busy nan" not in text and "kernels per step" not in text


def test_device_time_per_step_is_the_kernels_union_over_the_recorded_steps() -> None:
    # Two 100 us steps; kernels of 30 + 20 us (overlapping by 10) in the first, 40 us in the second.
    step = {"ph": "X", "cat": "user_annotation", "pid": 1, "tid": 1, "dur": 100}
    kernel = {"ph": "X", "cat": "kernel", "pid": 0, "tid": 7, "args": {"blocks per SM": 0.5}}
    events = [
        {**step, "name": "ProfilerStep#1", "ts": 0},
        {**step, "name": "ProfilerStep#2", "ts": 100},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 1, "dur": 2},
        {**kernel, "name": "a", "ts": 10, "dur": 30},
        {**kernel, "name": "b", "ts": 30, "dur": 20},
        {**kernel, "name": "c", "ts": 120, "dur": 40},
    ]
    trace = tr.summarize(tr.Trace.from_dict(events), device="cuda")
    summary = ProfileSummary("t.json", "t-ops.txt", steps=2, trace=trace, step_ms_inside=0.1,
                             step_ms_outside=0.1, overhead_pct=0.0)
    assert summary.busy_ms_per_step == pytest.approx((40 + 40) / 2 / 1e3)
    assert summary.busy_fraction == pytest.approx(80 / 200)
    assert "100% of the kernel time in kernels with fewer blocks than the GPU has SMs" in str(summary)
