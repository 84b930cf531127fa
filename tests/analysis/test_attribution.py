from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from vaebench.analysis.attribution import (
    ALLREDUCE,
    COMPUTE,
    DEVICE_BUSY,
    INPUT,
    LAUNCH,
    SYNC,
    Evidence,
    attribute,
    share_of_step,
    utilization_note,
)
from vaebench.analysis.report import bottlenecks
from vaebench.analysis.trace import CPU_SOURCE, DEVICE_SOURCE, NO_DEVICE_SOURCE
from vaebench.result import StepSplit
from vaebench.spec import RunSpec


def split(data: float, copy: float, compute: float, sync: float) -> StepSplit:
    return StepSplit(data_ms=data, copy_ms=copy, compute_ms=compute, sync_ms=sync)


def test_waiting_for_batches_is_an_input_pipeline_bound() -> None:
    found = attribute(Evidence(split(6.0, 1.0, 2.0, 1.0), "cuda", busy_fraction=0.15))
    assert found.kind == INPUT
    assert found.share == pytest.approx(0.7)
    assert any("--loader" in k for k in found.knobs) and "--pin-memory" in found.knobs
    assert "70% of the step" in str(found)


def test_a_busy_device_is_a_compute_bound() -> None:
    found = attribute(Evidence(split(0.1, 0.1, 1.0, 8.8), "cuda", busy_fraction=0.95))
    assert found.kind == COMPUTE and found.share == pytest.approx(0.95)
    assert "--amp bf16" in found.knobs
    assert "busy 95%" in str(found)


@pytest.mark.parametrize(("device_ms", "kind"), [(0.82, COMPUTE), (0.80, COMPUTE), (0.78, LAUNCH)])
def test_a_device_busy_from_80_percent_of_the_step_bounds_it(device_ms: float, kind: str) -> None:
    # A launching host's split; the trace's device time per 1 ms step decides (DEVICE_BUSY, 0.80).
    ev = Evidence(split(0.1, 0.1, 0.7, 0.1), "cuda", busy_source=DEVICE_SOURCE, busy_ms_per_step=device_ms,
                  step_median_ms=1.0)
    assert ev.busy == device_ms
    assert attribute(ev).kind == kind


def test_an_idle_device_and_a_launching_host_is_launch_overhead() -> None:
    ev = Evidence(split(0.1, 0.1, 5.0, 0.3), "cuda", busy_fraction=0.2, kernels_per_step=60)
    found = attribute(ev)
    assert found.kind == LAUNCH
    assert any("reduce-overhead" in k for k in found.knobs)
    text = str(found)
    assert "idle 80%" in text and "60 kernels per step" in text


def test_host_and_device_taking_turns_is_a_synchronization_bound() -> None:
    found = attribute(Evidence(split(0.1, 0.1, 3.0, 3.0), "cuda", busy_fraction=0.5))
    assert found.kind == SYNC
    assert found.share == pytest.approx(3.0 / 6.2)
    assert ".item()" in found.knobs[0]


def test_without_a_trace_a_long_wait_for_the_device_reads_as_compute() -> None:
    found = attribute(Evidence(split(0.1, 0.1, 0.5, 6.0), "cuda"))
    assert found.kind == COMPUTE
    assert "no trace" in str(found)


def test_cpu_run_with_few_op_time_is_python_and_dispatch_overhead() -> None:
    found = attribute(Evidence(split(0.2, math.nan, 4.0, math.nan), "cpu", busy_fraction=0.3))
    assert found.kind == LAUNCH and found.share == pytest.approx(0.7)
    assert not any("reduce-overhead" in k for k in found.knobs)


def test_cpu_run_busy_in_ops_is_compute_bound_with_thread_knobs() -> None:
    found = attribute(Evidence(split(0.2, 0.0, 4.0, 0.01), "cpu", busy_fraction=0.9))
    assert found.kind == COMPUTE and "--threads N" in found.knobs


def test_cpu_ops_at_half_the_wall_time_are_compute_not_dispatch() -> None:
    # Python and dispatch dominate only below CPU_OP_BUSY (0.50) of the wall time in aten ops.
    assert attribute(Evidence(split(0.2, 0.0, 4.0, 0.01), "cpu", busy_fraction=0.5)).kind == COMPUTE
    assert attribute(Evidence(split(0.2, 0.0, 4.0, 0.01), "cpu", busy_fraction=0.49)).kind == LAUNCH


def test_a_decisive_what_if_outranks_the_rules() -> None:
    ev = Evidence(split(1.0, 0.2, 5.0, 0.3), "cuda", busy_fraction=0.2, whatifs={"--loader device": 1.5})
    found = attribute(ev)
    assert found.kind == INPUT
    assert "rules pointed to host launch overhead" in str(found)
    assert "--loader device ran 1.50x as fast" in found.whatif


def test_the_fastest_decisive_what_if_names_the_bottleneck() -> None:
    launching = split(0.1, 0.1, 5.0, 0.3)
    whatifs = {"--loader device": 1.5, "--amp bf16": 1.3}
    assert attribute(Evidence(launching, "cuda", busy_fraction=0.2, whatifs=whatifs)).kind == INPUT
    # 1.20x as fast (DECISIVE_WHATIF) is decisive already; 1.19x is not.
    assert attribute(Evidence(launching, "cuda", busy_fraction=0.2, whatifs={"--loader device": 1.2})).kind == INPUT
    assert attribute(Evidence(launching, "cuda", busy_fraction=0.2, whatifs={"--loader device": 1.19})).kind == LAUNCH


def test_a_what_if_that_agrees_with_the_rules_backs_them_without_overruling() -> None:
    found = attribute(Evidence(split(6.0, 1.0, 2.0, 1.0), "cuda", busy_fraction=0.15, whatifs={"--loader device": 1.5}))
    assert found.kind == INPUT and found.whatif == "--loader device ran 1.50x as fast"
    assert "rules pointed to" not in str(found)


def test_a_what_if_on_one_of_the_knobs_backs_the_finding() -> None:
    ev = Evidence(
        split(0.1, 0.1, 5.0, 0.3),
        "cuda",
        busy_fraction=0.2,
        whatifs={"--compile reduce-overhead": 1.8, "--amp bf16": 1.05, "--workers 4": math.nan},
    )
    found = attribute(ev)
    assert found.kind == LAUNCH
    assert found.whatif == "--compile reduce-overhead ran 1.80x as fast"
    assert str(found).count("measured:") == 1


@pytest.mark.parametrize("data_ms", [2.8, 3.2])  # input 28% and 32% of a 10 ms step: repeats of one configuration
def test_an_input_share_near_its_cut_names_both_verdicts_and_their_knobs(data_ms: float) -> None:
    found = attribute(Evidence(split(data_ms, 0.0, 10.0 - data_ms, 0.0), "cpu", busy_fraction=0.9))
    text = str(found)
    assert "on the line between" in text and "input pipeline" in text and "compute" in text
    assert {"--loader tensor", "--workers N", "--threads N"} <= set(found.knobs)  # both sides' knobs


@pytest.mark.parametrize("data_ms", [2.4, 3.6])
def test_an_input_share_clear_of_its_cut_names_one_verdict(data_ms: float) -> None:
    found = attribute(Evidence(split(data_ms, 0.0, 10.0 - data_ms, 0.0), "cpu", busy_fraction=0.9))
    assert "on the line" not in str(found)
    assert ("--threads N" in found.knobs) != ("--loader tensor" in found.knobs)


def test_a_measured_what_if_settles_a_verdict_on_the_line() -> None:
    ev = Evidence(split(3.2, 0.0, 6.8, 0.0), "cpu", busy_fraction=0.9, whatifs={"--loader tensor": 1.5})
    found = attribute(ev)
    assert found.kind == INPUT and "on the line" not in str(found)


def test_a_knob_measured_slower_backs_nothing() -> None:
    ev = Evidence(split(0.2, 0.0, 4.0, 0.01), "cpu", busy_fraction=0.9,
                  whatifs={"--threads 1": 1.1, "--threads 2": 0.29})
    found = attribute(ev)
    assert found.kind == COMPUTE
    assert found.whatif == "--threads 1 ran 1.10x as fast"


def test_utilization_note_warns_against_reading_it_as_efficiency() -> None:
    note = utilization_note(93.0)
    assert "93%" in note and "not how much" in note and "compute efficiency" in note
    assert "busy fraction" in utilization_note(93.0, busy_fraction=0.41)
    assert "memcpy" in utilization_note(93.0, busy_fraction=0.41)
    assert "41%" in utilization_note(93.0, busy_fraction=0.41)


def test_a_host_op_share_is_not_device_busy_on_a_gpu_run() -> None:
    # The same split reads as compute bound with a real device busy of 90%...
    busy = attribute(Evidence(split(0.1, 0.1, 5.0, 0.3), "cuda", busy_fraction=0.9, busy_source=DEVICE_SOURCE))
    assert busy.kind == COMPUTE
    # ...but an aten-op share (an old CUDA record whose trace had no device rows) is ignored.
    ev = Evidence(split(0.1, 0.1, 5.0, 0.3), "cuda", busy_fraction=0.9, busy_source=CPU_SOURCE)
    assert math.isnan(ev.busy)
    found = attribute(ev)
    assert found.kind == LAUNCH and "busy 90%" not in str(found) and "idle" not in str(found)
    assert "aten-op share, not the GPU's" in str(found)


def test_a_run_and_its_configurations_medians_are_judged_alike() -> None:
    """The record's columns and the report's summary row go through one constructor: the busy
    fraction's source travels with both (the report's copy had once left it out)."""
    spec = RunSpec(device="cuda")
    parts = dict(zip(("data_ms", "copy_ms", "compute_ms", "sync_ms"), (0.1, 0.1, 5.0, 0.3), strict=True))
    run = {**{f"split_{k}": v for k, v in parts.items()}, "profile_busy_fraction": 0.9,
           "profile_busy_source": CPU_SOURCE, "gpu_util_mean": 40.0}
    from_run = attribute(Evidence.from_columns(run.get, spec))
    summary = {f"{k}_median": v for k, v in run.items() if k != "profile_busy_source"}
    summary |= {**spec.to_dict(), "config": "c", "profile_busy_source": CPU_SOURCE}
    assert bottlenecks(pd.DataFrame([summary]))["c"] == str(from_run)
    assert from_run.kind == LAUNCH and "aten-op share, not the GPU's" in str(from_run)
    assert Evidence.from_columns(run.get, spec).gpu_util_pct == 40.0


def test_device_time_per_step_against_the_unprofiled_step_undoes_the_profilers_slowing() -> None:
    # The H200's graphed top rung: 0.267 ms of device work per step; the profiler stretched the
    # step to about 0.46 ms (57% busy), the unprofiled step was 0.30 ms.
    top = split(0.05, 0.0, 0.25, 0.0)
    ev = Evidence(top, "cuda", busy_fraction=0.57, busy_source=DEVICE_SOURCE, busy_ms_per_step=0.267)
    assert ev.busy == pytest.approx(0.267 / 0.30)
    found = attribute(ev)
    assert found.kind == COMPUTE and "busy 89% of the step" in str(found)
    assert "0.267 ms of device work per step in a 0.300 ms unprofiled step" in str(found)
    # A device busy all step long bounds it, however long the host waited for input meanwhile.
    waiting = dataclasses.replace(ev, split=split(0.06, 0.04, 0.11, 0.0))
    assert attribute(waiting).kind == COMPUTE and waiting.share(0.06, 0.04) > 0.3
    # The run's own median step, where known, is the unprofiled step (a graphed run's is the device's period).
    timed = dataclasses.replace(ev, step_median_ms=0.288)
    assert timed.busy == pytest.approx(0.267 / 0.288) and "in a 0.288 ms unprofiled step" in str(attribute(timed))
    # Without the per-step figure the profiled window's fraction stands, and reads as launch-bound.
    assert attribute(dataclasses.replace(ev, busy_ms_per_step=math.nan)).kind == LAUNCH
    # A device busier than the step (work queued across steps) is busy all of it, not more.
    assert dataclasses.replace(ev, busy_ms_per_step=0.5).busy == 1.0
    # An idle device says by how much, from the same figures.
    idle = attribute(dataclasses.replace(ev, busy_ms_per_step=0.06))
    assert idle.kind == LAUNCH and "idle 80% of the step" in str(idle)
    # Kernels in grids smaller than the GPU: named when they hold most of the kernel time.
    underfilled = str(attribute(dataclasses.replace(ev, underfilled_share=0.81)))
    assert "81% of the kernel time ran kernels with fewer thread blocks than the GPU has SMs" in underfilled
    assert "50% of the kernel time ran" in str(attribute(dataclasses.replace(ev, underfilled_share=0.5)))  # UNDERFILLED
    assert "thread blocks" not in str(attribute(dataclasses.replace(ev, underfilled_share=0.49)))
    # A CPU run keeps its op share: the correction is for the device's rows only.
    cpu = Evidence(top, "cpu", busy_fraction=0.3, busy_source=CPU_SOURCE, busy_ms_per_step=0.29)
    assert cpu.busy == 0.3


def test_a_share_of_an_unknown_or_empty_step_is_unknown() -> None:
    assert share_of_step(0.5, 2.0) == 0.25 and share_of_step(3.0, 2.0) == 1.0
    assert math.isnan(share_of_step(1.0, 0.0))
    assert math.isnan(share_of_step(1.0, math.nan)) and math.isnan(share_of_step(math.nan, 1.0))


H200_GRAPHED = Path(__file__).parents[2] / "docs/examples/nvidia-h200/lease-2/runs.jsonl"


def _lease_2_graphed(*, traced: bool) -> Evidence:
    records = [json.loads(line) for line in H200_GRAPHED.read_text().splitlines()]
    (r,) = [r for r in records if r["cuda_graphs"] and r["profile"] is traced]
    parts = ("data", "copy", "compute", "sync", "device_copy", "device_compute")
    return Evidence(StepSplit(*(r[f"split_{part}_ms"] for part in parts)), r["device"],
                    busy_fraction=r["profile_busy_fraction"] or math.nan, busy_source=r["profile_busy_source"],
                    step_median_ms=r["step_median_ms"], gpu_util_pct=r["gpu_util_mean"], spec=RunSpec.from_dict(r))


def test_a_graphed_step_without_a_trace_is_timed_by_its_events() -> None:
    # The H200's top rung, timed without a trace: it used to read "host launch overhead".
    ev = _lease_2_graphed(traced=False)
    assert ev.busy == pytest.approx((0.00155 + 0.28288) / 0.28835, abs=1e-3)
    found = attribute(ev)
    assert found.kind == COMPUTE
    text = str(found)
    assert "median step 0.29 ms on the device; the host's mean step 0.26 ms = data 0.04" in text
    assert "busy at most 99% of the step (CUDA events: the step's graph holds the stream 0.284 ms" in text
    assert "--compile default" not in text and "--adam compiled" in text
    # The same events on an eager step include the host's launch gaps: they are never busy time.
    eager = dataclasses.replace(ev, spec=dataclasses.replace(ev.spec, cuda_graphs=False, sync="step"))
    assert math.isnan(eager.busy) and attribute(eager).kind == LAUNCH
    # An idle graphed device is idle at least by that much (the events' span is an upper bound on work).
    waiting = dataclasses.replace(ev, step_median_ms=2.0, split=dataclasses.replace(ev.split, data_ms=1.7))
    assert attribute(waiting).kind == INPUT
    assert "idle at least 86% of the step" in dataclasses.replace(waiting, split=ev.split).busy_text(idle=True)


def test_a_graphed_steps_trace_outranks_its_events_and_the_profiled_wall() -> None:
    # Traced on lease 2: the profiled steps' wall read 57 % busy (the profiler slowed the host);
    # that run's own events held the stream all of its step, which used to read "input pipeline".
    ev = _lease_2_graphed(traced=True)
    assert ev.busy_fraction < DEVICE_BUSY and attribute(ev).kind == COMPUTE
    assert ev.busy == 1.0  # the events' span, at most the step
    # The trace's device time per step, where recorded, is the better reading.
    timed = dataclasses.replace(ev, busy_ms_per_step=0.267)
    assert timed.busy == pytest.approx(0.267 / ev.step_median_ms) and "the trace's 0.267 ms" in str(attribute(timed))


def test_a_gpu_trace_without_device_rows_is_named_in_the_evidence() -> None:
    ev = Evidence(split(0.1, 0.1, 0.5, 6.0), "cuda:0", busy_fraction=math.nan, busy_source=NO_DEVICE_SOURCE)
    found = attribute(ev)
    assert found.kind == COMPUTE and "no trace to check" in str(found)
    assert "CUPTI missing?" in str(found)


def test_a_cpu_run_keeps_its_op_share() -> None:
    ev = Evidence(split(0.2, math.nan, 4.0, math.nan), "cpu", busy_fraction=0.3, busy_source=CPU_SOURCE)
    assert ev.busy == 0.3 and attribute(ev).kind == LAUNCH


def test_fp16_notes_the_scalers_second_sync() -> None:
    found = attribute(Evidence(split(0.1, 0.1, 5.0, 0.3), "cuda", busy_fraction=0.2,
                                spec=RunSpec(device="cuda", amp="fp16")))
    assert "found_inf.item()" in str(found)
    assert "found_inf" not in str(attribute(Evidence(split(0.1, 0.1, 5.0, 0.3), "cuda",
                                                 spec=RunSpec(device="cuda", amp="bf16"))))


def test_knobs_the_run_already_uses_are_named_as_set_not_advised() -> None:
    graphed = RunSpec(device="cuda", loader="device", sync="epoch", cuda_graphs=True)
    found = attribute(Evidence(split(0.03, 0.0, 0.21, 0.0), "cuda", spec=graphed))
    assert found.kind == LAUNCH
    # --compile is refused beside --cuda-graphs: inductor's kernels enter the graph as its Adam.
    assert found.knobs == ("--adam compiled (inductor's Adam kernels inside the graph)", "a larger --batch-size")
    assert found.set_already == ("--cuda-graphs",) and str(found).endswith("Already set: --cuda-graphs.")

    waiting = attribute(Evidence(split(0.07, 0.05, 0.16, 0.0), "cuda", spec=graphed))
    assert waiting.kind == INPUT and waiting.knobs == () and waiting.set_already == ("--loader device",)
    assert "Knobs: none left. Already set: --loader device." in str(waiting)


def test_a_launch_bound_compiled_run_is_pointed_to_the_whole_step_graph() -> None:
    # The H200's max-autotune rung: 2.35 ms a step, 96% of it launching, while --cuda-graphs
    # ran the same step in 0.29 ms. max-autotune already graphs what it compiled.
    autotuned = RunSpec(device="cuda", loader="device", sync="epoch", compile="max-autotune")
    found = attribute(Evidence(split(0.08, 0.01, 2.25, 0.0), "cuda", busy_fraction=0.11, spec=autotuned))
    assert found.kind == LAUNCH
    assert found.knobs[0].startswith("--cuda-graphs with --sync epoch, without --compile")
    assert not any("reduce-overhead" in knob for knob in found.knobs)
    assert found.set_already == ("--compile max-autotune",)
    fp16 = attribute(Evidence(split(0.08, 0.01, 2.25, 0.0), "cuda", busy_fraction=0.11,
                              spec=RunSpec(device="cuda", amp="fp16")))
    assert fp16.kind == LAUNCH and not any(knob.startswith("--cuda-graphs") for knob in fp16.knobs)
    ranks = attribute(Evidence(split(0.08, 0.01, 2.25, 0.0), "cuda", busy_fraction=0.11,
                               spec=RunSpec(device="cuda", nproc_per_node=2)))
    assert not any(knob.startswith("--cuda-graphs") for knob in ranks.knobs)


def test_a_fused_or_compiled_adam_is_a_launch_knob_until_the_run_uses_one() -> None:
    launching = split(0.1, 0.1, 5.0, 0.3)
    eager = attribute(Evidence(launching, "cuda", busy_fraction=0.2, spec=RunSpec(device="cuda")))
    assert eager.kind == LAUNCH and "--adam fused (one optimizer kernel)" in eager.knobs
    compiled = attribute(Evidence(launching, "cuda", busy_fraction=0.2, spec=RunSpec(device="cuda", adam="compiled")))
    assert not any(k.startswith("--adam") for k in compiled.knobs) and compiled.set_already == ("--adam compiled",)
    cpu = attribute(Evidence(split(0.2, math.nan, 4.0, math.nan), "cpu", busy_fraction=0.3, spec=RunSpec()))
    assert "--adam fused (one optimizer op)" in cpu.knobs


def test_a_tensor_loader_is_pointed_to_the_device_loader() -> None:
    found = attribute(Evidence(split(6.0, 1.0, 2.0, 1.0), "cuda", spec=RunSpec(device="cuda", loader="tensor")))
    assert found.knobs == ("--loader device", "--pin-memory") and found.set_already == ("--loader tensor",)


def test_compile_and_amp_already_on_leave_the_other_knobs() -> None:
    spec = RunSpec(device="cuda", compile="default", amp="bf16")
    found = attribute(Evidence(split(0.1, 0.1, 1.0, 8.8), "cuda", busy_fraction=0.95, spec=spec))
    assert found.kind == COMPUTE and found.knobs == ("a larger --batch-size",)
    assert found.set_already == ("--amp bf16", "--compile default")


def test_without_the_runs_settings_every_knob_is_open() -> None:
    found = attribute(Evidence(split(0.1, 0.1, 5.0, 0.3), "cuda", busy_fraction=0.2))
    assert "--compile reduce-overhead (CUDA graphs)" in found.knobs and found.set_already == ()


def test_a_data_parallel_run_is_told_of_its_all_reduce_and_no_knob_it_cannot_use() -> None:
    # Two CPU ranks: 95 % host compute, of which the all-reduce is 68 % of the step.
    ranks = RunSpec(threads=1, nproc_per_node=2)
    found = attribute(Evidence(split(0.1, 0.0, 9.5, 0.0), "cpu", allreduce_share=0.68, spec=ranks))
    assert found.kind == ALLREDUCE and found.share == 0.68
    assert "all-reduce of the gradients across ranks takes 68% of the step" in str(found)
    assert found.knobs == ("a larger --batch-size (fewer all-reduces per sample)", "fewer ranks (--nproc-per-node)")
    # ALLREDUCE_SHARE: from 30% of the step on, the all-reduce bounds the run.
    assert attribute(Evidence(split(0.1, 0.0, 9.5, 0.0), "cpu", allreduce_share=0.3, spec=ranks)).kind == ALLREDUCE
    # Below the share it is compute as before, without the knobs refused beside several ranks.
    light = attribute(Evidence(split(0.1, 0.0, 9.5, 0.0), "cpu", allreduce_share=0.1, spec=ranks))
    assert light.kind == COMPUTE and not any(k.startswith("--compile") for k in light.knobs)
    assert "--threads N" in light.knobs
    one = attribute(Evidence(split(0.1, 0.0, 9.5, 0.0), "cpu", spec=RunSpec(threads=1)))
    assert "--compile default" in one.knobs
    gpu = attribute(Evidence(split(0.1, 0.1, 5.0, 0.3), "cuda", busy_fraction=0.2,
                             spec=RunSpec(device="cuda", nproc_per_node=2)))
    assert gpu.kind == LAUNCH and not any(k.startswith(("--compile", "--cuda-graphs")) for k in gpu.knobs)
