"""Findings from fixed records with known answers: step split, GPU idle, threads, what-ifs, machines."""

from __future__ import annotations

import math

import pytest

from vaebench import stats
from vaebench.analysis.trace import CPU_SOURCE, DEVICE_SOURCE, NO_DEVICE_SOURCE
from vaebench.reproduce import findings as fnd


def test_cpu_step_split_names_the_input_pipeline() -> None:
    row = {"device": "cpu", "split_data_ms": 6.0, "split_copy_ms": 0.0, "split_compute_ms": 9.0, "split_sync_ms": 1.0}
    finding = fnd.step_split(row)
    assert finding is not None
    assert finding.numbers["step_ms"] == pytest.approx(16.0)
    assert "16.00 ms" in finding.text and "data wait 6.00 ms (38%)" in finding.text
    assert "38% of the step: input pipeline" in finding.text
    assert "GPU" not in finding.text


GPU_ROW = {"device": "cuda:0", "split_data_ms": 1.2, "split_copy_ms": 0.05, "split_compute_ms": 0.5,
           "split_sync_ms": 0.25, "split_device_copy_ms": 0.02, "split_device_compute_ms": 0.28}


def test_gpu_step_split_calls_the_events_stream_time_not_busy_time() -> None:
    # The events span the launch gaps, so 0.30 ms of a 2.00 ms step says nothing about idle time.
    finding = fnd.step_split(GPU_ROW | {"gpu_util_mean": 9.0})
    assert finding is not None
    n = finding.numbers
    assert n["stream_ms"] == pytest.approx(0.30) and n["stream_copy_ms"] == pytest.approx(0.02)
    assert n["stream_to_end_ms"] == pytest.approx(0.28) and n["gpu_util_mean"] == 9.0
    assert "gpu_idle_frac" not in n and "gpu_busy_frac" not in n and "device_busy_ms" not in n
    assert "0.30 ms per step on the stream" in finding.text
    assert "stream time, not busy time" in finding.text and "waited for the host to launch" in finding.text
    assert "busy 0" not in finding.text and "sat idle" not in finding.text
    assert "utilization.gpu averaged 9% (the share of time any kernel ran" in finding.text
    assert "data wait 1.20 ms (60%)" in finding.text


def test_a_graphed_steps_stream_time_bounds_the_devices_work_without_a_trace() -> None:
    # The H200's top rung (lease 2, no trace): one graph, queued at once, held the stream
    # 0.284 ms of each 0.288 ms step.
    row = GPU_ROW | {"cuda_graphs": True, "split_device_copy_ms": 0.0016, "split_device_compute_ms": 0.2829,
                     "step_median_ms": 0.2884}
    finding = fnd.step_split(row)
    assert finding is not None
    assert finding.numbers["graph_busy_step_frac"] == pytest.approx(0.2845 / 0.2884)
    assert "device works at most 99% of the 0.288 ms median step" in finding.text
    assert "not busy time" not in finding.text
    eager = fnd.step_split(row | {"cuda_graphs": False})
    assert eager is not None and "not busy time" in eager.text and "graph_busy_step_frac" not in eager.numbers


def test_gpu_busy_comes_from_the_traces_device_rows() -> None:
    row = GPU_ROW | {"profile_busy_fraction": 0.07, "profile_busy_source": DEVICE_SOURCE}
    finding = fnd.step_split(row)
    assert finding is not None
    assert finding.numbers["gpu_busy_frac"] == pytest.approx(0.07)
    assert finding.numbers["gpu_idle_frac"] == pytest.approx(0.93)
    assert "the GPU busy 7% of the profiled steps' wall time" in finding.text and "idle 93%" in finding.text
    assert "Nothing here measured" not in finding.text
    assert "device_busy_ms" not in finding.numbers  # an older record: no device time per step


def test_device_time_per_step_is_set_beside_the_unprofiled_step() -> None:
    row = GPU_ROW | {"profile_busy_fraction": 0.57, "profile_busy_source": DEVICE_SOURCE,
                     "profile_busy_ms_per_step": 1.6, "profile_underfilled_share": 0.81}
    finding = fnd.step_split(row)
    assert finding is not None
    assert finding.numbers["underfilled_frac"] == 0.81
    assert "81% of the kernel time went to kernels with fewer thread blocks than the GPU has SMs" in finding.text
    assert finding.numbers["device_busy_ms"] == 1.6
    assert finding.numbers["gpu_busy_step_frac"] == pytest.approx(1.6 / 2.0)
    assert "1.600 ms of device work per step fill 80% of the unprofiled 2.00 ms mean step" in finding.text
    assert fnd.step_split(row | {"profile_busy_ms_per_step": 3.0}).numbers["gpu_busy_step_frac"] == 1.0
    timed = fnd.step_split(row | {"step_median_ms": 1.7})  # the run's own median step, where recorded
    assert timed is not None and "fill 94% of the unprofiled 1.70 ms median step" in timed.text


def test_a_host_op_share_on_a_gpu_run_is_not_gpu_busy() -> None:
    # An old record whose trace had no device rows and fell back to the CPU's aten-op share.
    finding = fnd.step_split(GPU_ROW | {"profile_busy_fraction": 0.9, "profile_busy_source": CPU_SOURCE})
    assert finding is not None
    assert "gpu_busy_frac" not in finding.numbers and "90%" not in finding.text
    assert "Nothing here measured how busy the GPU was" in finding.text


def test_a_trace_without_gpu_activity_says_so() -> None:
    row = GPU_ROW | {"profile_busy_fraction": None, "profile_busy_source": NO_DEVICE_SOURCE}
    finding = fnd.step_split(row)
    assert finding is not None
    assert "no GPU activity" in finding.text and "CUPTI missing?" in finding.text
    assert "gpu_busy_frac" not in finding.numbers


def test_fp16_step_split_warns_of_the_scalers_second_sync() -> None:
    finding = fnd.step_split(GPU_ROW | {"amp": "fp16"})
    assert finding is not None and "found_inf.item()" in finding.text
    plain = fnd.step_split(GPU_ROW | {"amp": "bf16"})
    assert plain is not None and "found_inf" not in plain.text


def test_no_split_no_finding() -> None:
    assert fnd.step_split({"device": "cpu", "split_data_ms": None}) is None


def cpu(threads: int | None, user: float, sys_: float, rate: float, cores: int = 20, **extra: object) -> dict:
    return {"device": "cpu", "threads": threads, "user_s": user, "sys_s": sys_, "samples_per_s": rate,
            "fp_logical_cores": cores, **extra}


def test_sys_growing_faster_than_user_to_a_large_share_is_spin_waiting() -> None:
    rows = [cpu(1, 10.0, 1.0, 5000), cpu(4, 12.0, 9.0, 6000), cpu(2, 11.0, 3.0, 5800)]
    finding = fnd.thread_scaling(rows)
    assert finding is not None
    n = finding.numbers
    assert (n["threads_low"], n["threads_high"]) == (1, 4)
    assert n["sys_user_low"] == pytest.approx(0.1) and n["sys_user_high"] == pytest.approx(0.75)
    assert n["sys_growth"] == pytest.approx(9.0) and n["user_growth"] == pytest.approx(1.2)
    assert n["speedup"] == pytest.approx(1.2)
    assert "spin-waiting and sleeping in the kernel" in finding.text
    assert "0.10 -> 0.75" in finding.text and "30% of linear" in finding.text
    assert "oversubscribed" not in finding.text


def test_sys_at_half_of_user_is_a_large_share() -> None:
    # SYS_HEAVY: sys at half of user or more gets the spin-waiting sentence; just under, only the signature.
    half = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000), cpu(4, 12.0, 6.0, 6000)])
    assert half is not None and half.numbers["sys_user_high"] == 0.5
    assert "spin-waiting and sleeping in the kernel" in half.text
    under = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000), cpu(4, 12.0, 5.88, 6000)])
    assert under is not None and "stays at 0.49 of user" in under.text


def test_sys_growing_faster_but_small_is_only_the_signature() -> None:
    finding = fnd.thread_scaling([cpu(1, 17.0, 0.9, 6000, cores=2), cpu(2, 18.4, 1.5, 9300, cores=2)])
    assert finding is not None
    assert "the signature of threads spin-waiting" in finding.text and "stays at 0.08 of user" in finding.text


def test_no_spin_sign_when_sys_keeps_pace_with_user() -> None:
    finding = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 12.0, 1.2, 9000, cores=2)])
    assert finding is not None
    assert "no sign of spin-waiting" in finding.text


def test_sys_outgrowing_user_near_the_cut_says_a_rerun_may_read_it_otherwise() -> None:
    # The audit's three identical sweeps read this ratio 1.08, 1.26 and 1.39 against the 1.25 cut;
    # 1.0 and 1.5 lie clear of it and keep their sentence as it was.
    for sys_growth, near in ((1.0, False), (1.08, True), (1.26, True), (1.39, True), (1.5, False)):
        finding = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 10.0, sys_growth, 9000, cores=2)])
        assert finding is not None
        assert ("no sign of spin-waiting" in finding.text) is (sys_growth < 1.25)
        line = (f"Sys grew {sys_growth:.2f}x as fast as user, within 15% of the 1.25x that reads as threads waiting "
                "in the kernel, so on one run each a rerun may read it on the other side.")
        assert (line in finding.text) is near and ("rerun" in finding.text) is near
        assert ("sys_outgrows_user_close" in finding.numbers) is near


def test_repeats_of_a_thread_count_are_read_as_their_medians() -> None:
    low = fnd.median_run([cpu(1, 10.0, 1.0, 5000, cores=2) for _ in range(3)])
    # The audit's three readings of one ratio, as three runs of one side: their median is 1.26.
    near = fnd.thread_scaling([low, fnd.median_run([cpu(2, 10.0, s, 9000, cores=2) for s in (1.08, 1.26, 1.39)])])
    assert near is not None and near.numbers["sys_growth"] == pytest.approx(1.26)
    assert near.text.startswith("From 1 to 2 threads on 2 cores (medians of 3 runs each), user time")
    assert ("Sys grew 1.26x as fast as user, within 15% of the 1.25x that reads as threads waiting in the kernel, "
            "too close to call even as medians of 3 runs each.") in near.text
    # One run far off the others moves the median little: the latest alone (1.6) would read as the signature.
    odd = fnd.thread_scaling([low, fnd.median_run([cpu(2, 10.0, s, 9000, cores=2) for s in (1.0, 1.02, 1.6)])])
    assert odd is not None and "no sign of spin-waiting" in odd.text and "too close" not in odd.text
    assert (odd.numbers["runs_low"], odd.numbers["runs_high"]) == (3, 3)


def test_more_threads_than_cores_is_oversubscribed() -> None:
    rows = [cpu(1, 10.0, 1.0, 5000, cores=2, ctx_involuntary=100), cpu(4, 14.0, 8.0, 4000, cores=2,
                                                                         ctx_involuntary=90000)]
    finding = fnd.thread_scaling(rows)
    assert finding is not None
    assert finding.numbers["oversubscribed"] == 1.0
    assert "4 threads on 2 cores is oversubscribed" in finding.text and "100 -> 90,000" in finding.text


def test_as_many_threads_as_cores_is_not_oversubscribed() -> None:
    finding = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 12.0, 1.2, 9000, cores=2)])
    assert finding is not None
    assert "oversubscribed" not in finding.text and "oversubscribed" not in finding.numbers
    three = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(3, 12.0, 1.2, 9000, cores=2)])
    assert three is not None and "3 threads on 2 cores is oversubscribed" in three.text


def test_default_threads_read_from_the_child_fingerprint() -> None:
    assert fnd.thread_count({"threads": None, "fp_torch_threads": 2}) == 2
    assert fnd.thread_count({"threads": 1, "fp_torch_threads": 2}) == 1
    assert fnd.thread_scaling([cpu(None, 10.0, 1.0, 1.0, fp_torch_threads=2)]) is None


def test_cpu_time_balance_without_a_sweep() -> None:
    finding = fnd.cpu_time_balance(cpu(None, 20.0, 2.0, 1.0, cores=2, fp_torch_threads=2))
    assert finding is not None and finding.numbers["sys_user"] == pytest.approx(0.1)
    assert "at 2 threads on 2 cores spent 2.00 s in the kernel against 20.00 s" in finding.text


BASE = {"cpu": {"device": "cpu", "loader": "reference", "compile": "off", "epoch_s": 12.0, "samples_per_s": 5000.0},
        "cuda:0": {"device": "cuda:0", "loader": "reference", "compile": "off", "epoch_s": 8.0,
                   "samples_per_s": 8000.0}}
CHANGES = [
    {"device": "cpu", "loader": "tensor", "compile": "off", "epoch_s": 6.0, "samples_per_s": 10000.0},
    {"device": "cpu", "loader": "device", "compile": "off", "epoch_s": 4.0, "samples_per_s": 15000.0},
    {"device": "cuda:0", "loader": "device", "compile": "off", "epoch_s": 2.0, "samples_per_s": 32000.0},
    {"device": "cuda:0", "loader": "reference", "compile": "reduce-overhead", "epoch_s": 10.0,
     "samples_per_s": 12000.0, "compile_s": 5.0},
]


def test_what_if_speedups_against_the_same_device() -> None:
    whatifs = fnd.what_ifs(CHANGES, BASE)
    got = [(w.device, w.change, round(w.speedup, 3), round(w.steady_speedup, 3)) for w in whatifs]
    assert got == [
        ("cpu", "loader=tensor", 2.0, 2.0),
        ("cpu", "loader=device", 3.0, 3.0),
        ("cuda:0", "loader=device", 4.0, 4.0),
        ("cuda:0", "compile=reduce-overhead", 0.8, 1.5),
    ]


def test_pipeline_share_and_the_published_gpu_seconds() -> None:
    found = fnd.pipeline_share(fnd.what_ifs(CHANGES, BASE), BASE, published_gpu_real_s=76.44)
    cpu_finding, gpu_finding = found
    assert cpu_finding.numbers["share"] == pytest.approx(2 / 3)
    assert "loader=device ran an epoch in 4.00 s against the reference pipeline's 12.00 s (3.00x)" in cpu_finding.text
    assert "67% of the seed configuration's epoch" in cpu_finding.text
    assert "needs a GPU run" not in cpu_finding.text  # there is one
    assert gpu_finding.numbers["share"] == pytest.approx(0.75)
    assert gpu_finding.numbers["published_pipeline_s"] == pytest.approx(0.75 * 76.44)
    assert "at most about 57 s of its 76.4 s went to the input pipeline (its time includes start-up" in gpu_finding.text
    assert "compile=reduce-overhead: 0.80x per epoch (compile 5.0 s included), 1.50x in the steady state" in (
        gpu_finding.text)


def test_pipeline_share_on_a_cpu_only_machine() -> None:
    base = {"cpu": BASE["cpu"]}
    (finding,) = fnd.pipeline_share(fnd.what_ifs(CHANGES[:2], base), base, published_gpu_real_s=76.44)
    assert "needs a GPU run here" in finding.text


def test_a_slower_loader_is_not_called_the_bottleneck() -> None:
    base = {"cpu": BASE["cpu"]}
    slow = [dict(CHANGES[0], epoch_s=13.0)]
    (finding,) = fnd.pipeline_share(fnd.what_ifs(slow, base), base)
    assert "was not what cost time" in finding.text and finding.numbers["share"] < 0


def test_a_what_if_that_changes_more_than_the_input_pipeline_is_not_its_share() -> None:
    base = {"cpu": BASE["cpu"]}
    rows = [{"device": "cpu", "loader": "device", "sync": "epoch", "compile": "off", "epoch_s": 4.0,
             "samples_per_s": 15000.0},
            {"device": "cpu", "loader": "tensor", "compile": "off", "epoch_s": 9.0, "samples_per_s": 6700.0}]
    whatifs = fnd.what_ifs(rows, base)
    assert whatifs[0].knobs == ("loader", "sync")
    (finding,) = fnd.pipeline_share(whatifs, base)
    assert finding.numbers["best_epoch_s"] == 9.0 and finding.numbers["share"] == pytest.approx(0.25)
    assert "loader=tensor ran an epoch in 9.00 s" in finding.text
    assert " loader=device,sync=epoch: 3.00x per epoch" in finding.text  # listed after, with its own gain


def test_a_loader_that_only_ties_the_seed_did_not_beat_it() -> None:
    base = {"cpu": BASE["cpu"]}
    (finding,) = fnd.pipeline_share(fnd.what_ifs([dict(CHANGES[0], epoch_s=12.0)], base), base)
    assert finding.numbers["share"] == 0.0 and "no loader beat the seed's reference pipeline" in finding.text


def test_a_loader_gain_within_share_slack_of_the_step_split_is_the_input_pipelines() -> None:
    split = BASE["cpu"] | {"epoch_s": 10.0, "split_data_ms": 30.0, "split_copy_ms": 0.0, "split_compute_ms": 70.0,
                           "split_sync_ms": 0.0}  # data wait 30% of the step
    base = {"cpu": split}
    for epoch_s, held in ((6.7, True), (6.4, False)):  # a gain of 33% and of 36% against 30% + SHARE_SLACK
        (finding,) = fnd.pipeline_share(fnd.what_ifs([dict(CHANGES[0], epoch_s=epoch_s)], base), base)
        assert finding.numbers["input_share"] == pytest.approx(0.30)
        assert ("as its step split allows (data wait and copy 30% of the step)" in finding.text) is held
        assert ("data wait and copy at only 30%" in finding.text) is not held


def test_a_loader_gain_near_the_share_its_split_allows_says_a_rerun_may_read_it_otherwise() -> None:
    # The audit's --quick folder: loader=tensor 2.28 s against 6.81 s, a 67% gain, beside data wait
    # and copy at 57% of the step, 4.5 points past the 62% that allows; its repeats read the other side.
    split = BASE["cpu"] | {"epoch_s": 6.81, "split_data_ms": 57.0, "split_copy_ms": 0.0, "split_compute_ms": 43.0,
                           "split_sync_ms": 0.0}
    base = {"cpu": split}
    for epoch_s, gain, allows, near in ((2.28, 67, False, True), (2.8, 59, True, True), (1.8, 74, False, False),
                                        (3.3, 52, True, False)):
        (finding,) = fnd.pipeline_share(fnd.what_ifs([dict(CHANGES[0], epoch_s=epoch_s)], base), base)
        assert ("as its step split allows (data wait and copy 57% of the step)" in finding.text) is allows
        assert ("data wait and copy at only 57%" in finding.text) is not allows
        line = (f" The {gain}% gain is within 5 points of the 62% the step split allows (its 57% plus 5 points of "
                "slack), so on one run each a rerun may read it on the other side.")
        assert (line in finding.text) is near and ("rerun" in finding.text) is near
        assert ("share_close" in finding.numbers) is near


def test_a_loader_is_picked_and_judged_by_the_medians_of_its_repeats() -> None:
    split = BASE["cpu"] | {"split_data_ms": 57.0, "split_copy_ms": 0.0, "split_compute_ms": 43.0, "split_sync_ms": 0.0}
    base = {"cpu": fnd.median_run([split | {"epoch_s": e} for e in (7.5, 6.5, 6.81)])}
    tensor = fnd.median_run([dict(CHANGES[0], epoch_s=e) for e in (3.0, 3.1, 2.0)])  # its latest alone is fastest
    device = fnd.median_run([dict(CHANGES[1], epoch_s=e) for e in (2.6, 2.7, 2.8)])
    (finding,) = fnd.pipeline_share(fnd.what_ifs([tensor, device], base), base)
    assert ("On cpu, loader=device ran an epoch in 2.70 s against the reference pipeline's 6.81 s (2.52x, medians "
            "of 3 runs each): 60% of the seed configuration's epoch was the input pipeline, as its step split allows"
            ) in finding.text
    assert ("The 60% gain is within 5 points of the 62% the step split allows (its 57% plus 5 points of slack), too "
            "close to call even as medians of 3 runs each.") in finding.text
    one = fnd.median_run([dict(CHANGES[1], epoch_s=2.7)])
    (single,) = fnd.pipeline_share(fnd.what_ifs([one], base), base)
    assert "(2.52x, one run and a median of 3 runs)" in single.text  # the loader's side, then the reference's
    assert "so on one run and a median of 3 runs a rerun may read it on the other side" in single.text


def test_machine_differences_with_the_published_machine() -> None:
    here = {"fp_logical_cores": 2, "fp_cpu_model": "AMD EPYC", "fp_gpu_name": "", "fp_torch": "2.14.1",
            "data_source": "embedded-5k"}
    differ, unknown = fnd.machine_differences({"logical_cores": 20, "gpu_name": "RTX 3090"}, here)
    assert [(d.field, d.published, d.here) for d in differ] == [("logical_cores", 20, 2), ("gpu_name", "RTX 3090",
                                                                                            "none")]
    assert unknown == ["cpu_model", "torch"]
    finding = fnd.machine_finding("20-core CPU", {"logical_cores": 20}, here, data="mnist")
    assert finding is not None
    assert "cores 20 published vs 2 here" in finding.text
    assert "data mnist published vs embedded-5k here" in finding.text
    assert "Not published, so not compared: CPU, GPU, torch" in finding.text
    assert fnd.machine_finding("same", {"logical_cores": 2}, {"fp_logical_cores": 2}) is None


def test_a_tables_whole_float_is_the_same_machine_as_a_claims_int() -> None:
    # load_runs rows: a fingerprint column with a missing cell (a run that failed before its
    # fingerprint) is float, so 20 cores read 20.0 in every row, and a missing one NaN.
    published = {"logical_cores": 20, "torch": "2.11.0"}
    assert fnd.machine_differences(published, {"fp_logical_cores": 20.0, "fp_torch": "2.11.0"}) == ([], [
        "cpu_model", "gpu_name"])
    assert fnd.machine_finding("20-core CPU", {"logical_cores": 20}, {"fp_logical_cores": 20.0}) is None
    assert fnd.machine_finding("20-core CPU", {"logical_cores": 20}, {"fp_logical_cores": math.nan}) is None
    assert fnd.machine_finding("20-core CPU", {"logical_cores": 20.0}, {"fp_logical_cores": 20}) is None  # TOML 20.0
    fewer = fnd.machine_finding("20-core CPU", {"logical_cores": 20}, {"fp_logical_cores": 2.0})
    assert fewer is not None and "cores 20 published vs 2 here" in fewer.text
    assert fewer.numbers == {"logical_cores": 2.0}


def test_number_reads_cells_safely() -> None:
    assert math.isnan(stats.number(None)) and math.isnan(stats.number("x")) and math.isnan(stats.number(True))
    assert stats.number("2.5") == 2.5


def test_contention_from_the_outside_monitor() -> None:
    quiet = {"device": "cpu", "loader": "reference", "cpu_util_mean": 95.0, "cpu_pct": 180.0, "fp_logical_cores": 2}
    busy = {"device": "cpu", "loader": "tensor", "cpu_util_mean": 98.0, "cpu_pct": 52.0, "fp_logical_cores": 2}
    assert fnd.contention([quiet]) is None  # the run itself used 90% of the machine
    finding = fnd.contention([quiet, busy])
    assert finding is not None and finding.numbers["others_pct"] == pytest.approx(72.0)
    assert "the cpu run (loader=tensor) the machine's cores were 98% busy while the run itself used 26%" in finding.text
    assert fnd.contention([{"device": "cpu"}]) is None


def test_threads_that_burn_cpu_without_progress() -> None:
    finding = fnd.thread_scaling([cpu(1, 11.8, 1.38, 6831, cores=2), cpu(2, 43.1, 1.52, 1144, cores=2)])
    assert finding is not None
    assert "no sign of spin-waiting" in finding.text
    assert finding.numbers["cpu_per_sample_growth"] == pytest.approx((43.1 / 11.8) / (1144 / 6831))
    assert "user time per sample grew 21.81x" in finding.text


def rung(loader: str = "reference", step: float = 8.9, data: float = 6.75, compute: float = 2.4, **knobs: object
         ) -> dict:
    return {"loader": loader, "pin_memory": False, "sync": "step", "cuda_graphs": False, "compile": "off",
            "amp": "off", "step_median_ms": step, "split_data_ms": data, "split_copy_ms": 0.1,
            "split_compute_ms": compute, "split_sync_ms": 0.04} | knobs


def test_rung_steps_name_the_wait_each_knob_removed() -> None:
    rows = [
        rung(),
        rung("device", step=2.44, data=0.07, compute=2.29),
        rung("device", step=2.24, data=0.06, compute=2.15, sync="epoch", split_sync_ms=0.0),
        rung("device", step=0.377, data=0.03, compute=0.27, sync="epoch", cuda_graphs=True, split_sync_ms=0.0),
        rung("device", step=0.25, data=0.03, compute=0.22, sync="epoch", cuda_graphs=True, adam="compiled",
             split_sync_ms=0.0),
        rung("device", step=2.22, data=0.07, compute=2.58, sync="epoch", compile="reduce-overhead",
             split_sync_ms=0.0),
    ]
    texts = [f.text for f in fnd.rung_steps(rows)]
    # The compiled optimizer builds on the graphs: set against them.
    assert texts.pop(3).startswith("adam=compiled (against loader=device,sync=epoch,cuda_graphs=on): median step 0.377")
    assert texts[0].startswith("loader=device (against seed configuration): median step 8.900 -> 2.440 ms")
    assert "data wait 6.750 -> 0.070 ms per step (mean)" in texts[0]
    assert texts[2].startswith("cuda_graphs=on (against loader=device,sync=epoch)") and "5.94x" in texts[2]
    # compile replaces the graphs: it is set against the rung below both, not against cuda-graphs.
    assert texts[3].startswith("compile=reduce-overhead (against loader=device,sync=epoch)")
    assert "host compute" not in texts[3]  # nothing fell: no phase is named as removed


def test_contention_compares_the_training_window_with_the_training_window() -> None:
    # An H200 record: 16 threads busy during training (monitor 90%), but the process's whole-life
    # %CPU, diluted by a single-threaded start-up, read as 28%: not a neighbour.
    row = {"device": "cpu", "loader": "device", "cpu_util_mean": 90.2, "cpu_pct": 446.0, "fp_logical_cores": 16,
           "train_user_s": 27.5, "train_sys_s": 6.7, "train_s": 2.31, "workers": 0}
    assert fnd.contention([row]) is None
    busy = row | {"train_user_s": 5.0, "train_sys_s": 0.5}
    finding = fnd.contention([busy])
    assert finding is not None and finding.numbers["others_pct"] == pytest.approx(90.2 - 100 * 5.5 / 2.31 / 16)


def test_cpu_per_sample_is_called_burnt_only_past_the_noise() -> None:
    # User time per sample x1.10: one run's noise could explain it. x1.25 (SYS_FASTER) cannot.
    noise = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 11.0, 1.1, 5000, cores=2)])
    assert noise is not None and "burn CPU" not in noise.text and "cpu_per_sample_growth" not in noise.numbers
    burnt = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 12.5, 1.25, 5000, cores=2)])
    assert burnt is not None and "user time per sample grew 1.25x: the extra threads burn CPU" in burnt.text


def test_cpu_per_sample_near_the_cut_says_a_rerun_may_read_it_otherwise() -> None:
    line = ("within 15% of the 1.25x past which the extra threads are read as wasted, so on one run each a rerun may "
            "read it on the other side.")
    burnt = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 13.0, 1.3, 5000, cores=2)])
    assert burnt is not None and "the extra threads burn CPU" in burnt.text
    assert f"User time per sample grew 1.30x, {line}" in burnt.text and burnt.numbers["cpu_per_sample_close"] == 1.0
    below = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 11.0, 1.1, 5000, cores=2)])
    assert below is not None and "burn CPU" not in below.text
    assert f"User time per sample grew 1.10x, {line}" in below.text
    clear = fnd.thread_scaling([cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 10.0, 1.0, 5000, cores=2)])
    assert clear is not None and "User time per sample" not in clear.text


def test_with_dataloader_workers_the_runs_own_cpu_is_the_whole_process_trees() -> None:
    # The training window's rusage is the main process's alone; its workers' CPU is only in cpu_pct.
    row = {"fp_logical_cores": 2, "train_user_s": 1.0, "train_sys_s": 0.2, "train_s": 2.0, "cpu_pct": 150.0}
    assert fnd.own_cpu_pct(row | {"workers": 2}) == pytest.approx(150.0 / 2)
    assert fnd.own_cpu_pct(row | {"workers": 0}) == pytest.approx(100 * 1.2 / 2.0 / 2)


def test_others_using_a_quarter_of_the_machine_is_contention() -> None:
    at = {"device": "cpu", "loader": "reference", "cpu_util_mean": 75.0, "cpu_pct": 100.0, "fp_logical_cores": 2}
    finding = fnd.contention([at])  # the run used 50% of the cores, others 25%: CONTENDED
    assert finding is not None and finding.numbers["others_pct"] == 25.0
    assert fnd.contention([at | {"cpu_util_mean": 74.9}]) is None


def test_change_label_names_every_knob_off_the_seed() -> None:
    assert fnd.change_label(rung()) == "seed configuration"
    assert fnd.change_label(rung("tensor", pin_memory=True)) == "loader=tensor,pin_memory=on"
    assert fnd.change_label(rung("device", sync="epoch", cuda_graphs=True)) == "loader=device,sync=epoch,cuda_graphs=on"


def test_input_bound_is_one_rule_for_findings_and_attribution() -> None:
    from vaebench.analysis.attribution import INPUT, Evidence, attribute
    from vaebench.result import StepSplit

    # Was: findings called a step input-bound at 25% data wait alone, attribution at 30% of
    # data + copy; these two steps got opposite verdicts from the two.
    for data, copy, bound in ((2.7, 0.0, False), (2.0, 1.5, True)):
        row = {"device": "cuda:0", "split_data_ms": data, "split_copy_ms": copy,
               "split_compute_ms": 10.0 - data - copy - 0.5, "split_sync_ms": 0.5}
        found = fnd.step_split(row)
        assert found is not None and ("input pipeline, not model" in found.text) is bound
        verdict = attribute(Evidence(split=StepSplit(data, copy, 10.0 - data - copy - 0.5, 0.5), device="cuda:0"))
        assert (verdict.kind == INPUT) is bound


def test_a_step_at_exactly_the_input_bound_share_is_input_bound_for_findings_and_attribution() -> None:
    from vaebench.analysis.attribution import INPUT, Evidence, attribute
    from vaebench.result import StepSplit
    from vaebench.rules import INPUT_BOUND_SHARE

    for data, bound in ((3.0, True), (2.99, False)):  # 30% of a 10 ms step, and just under
        row = {"device": "cpu", "split_data_ms": data, "split_copy_ms": 0.0, "split_compute_ms": 10.0 - data - 0.5,
               "split_sync_ms": 0.5}
        assert (data / 10.0 >= INPUT_BOUND_SHARE) is bound
        found = fnd.step_split(row)
        assert found is not None and ("input pipeline, not model" in found.text) is bound
        verdict = attribute(Evidence(split=StepSplit(data, 0.0, 10.0 - data - 0.5, 0.5), device="cpu"))
        assert (verdict.kind == INPUT) is bound


@pytest.mark.parametrize(("data", "near"), [(2.8, True), (3.2, True), (2.4, False), (3.6, False)])
def test_a_step_split_near_the_input_cut_says_a_rerun_may_read_it_otherwise(data: float, near: bool) -> None:
    row = {"device": "cpu", "split_data_ms": data, "split_copy_ms": 0.0, "split_compute_ms": 10.0 - data,
           "split_sync_ms": 0.0}
    found = fnd.step_split(row)
    assert found is not None and ("a rerun may read it on the other side" in found.text) is near
    assert ("input pipeline, not model" in found.text) is (data >= 3.0)


def test_a_step_split_measured_beside_a_busy_neighbour_says_so() -> None:
    row = {"device": "cpu", "split_data_ms": 1.0, "split_copy_ms": 0.0, "split_compute_ms": 9.0, "split_sync_ms": 0.0}
    busy = fnd.step_split(row | {"neighbour_cpu_pct": 96.0})
    quiet = fnd.step_split(row | {"neighbour_cpu_pct": 2.0})
    assert busy is not None and quiet is not None
    assert "The split may be the neighbours' doing: other processes used 96% of a core" in busy.text
    assert busy.numbers["contended"] == 1.0
    assert "neighbour" not in quiet.text and "contended" not in quiet.numbers


def _sweep_rows() -> list[dict]:
    from tests.analysis.test_kernel import ALLOCATOR_RUN, MIXED_RUN, OVERSUBSCRIBED_RUN

    return [ALLOCATOR_RUN, MIXED_RUN, OVERSUBSCRIBED_RUN | {"allocator": "system"}]


def test_kernel_anatomy_reads_the_counters_across_the_thread_sweep() -> None:
    finding = fnd.kernel_anatomy(_sweep_rows())
    assert finding is not None and finding.topic == "kernel"
    text = finding.text
    assert text.startswith("From 1 to 16 threads on 2 cores, over the training windows sys/user went 0.11 -> 0.27")
    assert "voluntary context switches per step 0 -> 1,620;" in text  # no ratio to nearly nothing
    assert "minor faults per step 895 -> 26 (x0.029)" in text and "run-queue wait 9.1 -> 110.7 ms per step" in text
    assert "At 1 thread the kernel time is allocator page faults" in text and "at 16 it is oversubscription" in text
    assert finding.numbers["voluntary_high"] == pytest.approx(486150 / 300)
    assert fnd.kernel_anatomy(_sweep_rows()[:1]) is None


def test_flat_faults_and_growing_switches_say_threads_not_allocator() -> None:
    from tests.analysis.test_kernel import ALLOCATOR_RUN, MIXED_RUN

    glibc_16 = MIXED_RUN | {"threads": 16, "fp_torch_threads": 16, "train_ctx_voluntary": 486150.0}
    finding = fnd.kernel_anatomy([ALLOCATOR_RUN, glibc_16])
    assert finding is not None
    assert "895 -> 889 (x0.99)" in finding.text
    assert "the threads, not the allocator, add the kernel time" in finding.text


def test_falling_faults_or_an_allocator_verdict_at_the_top_say_nothing_of_flat_faults() -> None:
    from tests.analysis.test_kernel import ALLOCATOR_RUN, MIXED_RUN

    # The faults fall to 40% while the switches grow: they are not flat.
    fewer = MIXED_RUN | {"threads": 16, "fp_torch_threads": 16, "train_ctx_voluntary": 486150.0,
                         "train_minor_faults": 0.4 * 268589.0}
    falling = fnd.kernel_anatomy([ALLOCATOR_RUN, fewer])
    assert falling is not None and "x0.4" in falling.text and "faults stay flat" not in falling.text
    # Flat faults, but at the top the allocator is still the cause: the threads do not add the kernel time.
    two = ALLOCATOR_RUN | {"threads": 2, "fp_torch_threads": 2, "train_ctx_voluntary": 3000.0}
    allocator = fnd.kernel_anatomy([ALLOCATOR_RUN, two])
    assert allocator is not None and "at 2 it is allocator page faults" in allocator.text
    assert "faults stay flat" not in allocator.text


def test_wait_policy_and_allocator_what_ifs_say_what_they_did_to_sys() -> None:
    from tests.analysis.test_kernel import ALLOCATOR_RUN, OVERSUBSCRIBED_RUN, WAKEUPS_RUN

    default = OVERSUBSCRIBED_RUN | {"samples_per_s": 4000.0}
    active = OVERSUBSCRIBED_RUN | {"omp_wait_policy": "active", "train_sys_s": 1.0, "train_user_s": 14.0,
                                   "samples_per_s": 2000.0}
    finding = fnd.wait_policy_effect([default], [active])
    assert finding is not None
    assert "--omp-wait-policy active at 16 threads: sys 1.46 -> 1.00 s, user 5.38 -> 14.00 s" in finding.text
    assert "samples/s x0.50" in finding.text
    assert fnd.wait_policy_effect([default], []) is None
    base = ALLOCATOR_RUN | {"step_median_ms": 7.3}
    jemalloc = WAKEUPS_RUN | {"threads": 1, "allocator": "jemalloc", "step_median_ms": 5.0}
    found = fnd.allocator_effect([jemalloc, base | {"loader": "tensor"}], {"cpu": base})
    assert len(found) == 1
    assert found[0].text == ("--allocator jemalloc: minor faults per step 895 -> 15, sys over the training window "
                             "0.50 -> 0.16 s, median step 7.30 -> 5.00 ms (1.46x).")


def test_a_wait_policy_is_compared_at_the_top_thread_count_both_ran() -> None:
    from tests.analysis.test_kernel import ALLOCATOR_RUN, OVERSUBSCRIBED_RUN

    sweep = [ALLOCATOR_RUN | {"samples_per_s": 5000.0}, OVERSUBSCRIBED_RUN | {"samples_per_s": 4000.0}]
    passive = [row | {"omp_wait_policy": "passive", "samples_per_s": 2000.0} for row in sweep]
    finding = fnd.wait_policy_effect(sweep, passive)
    assert finding is not None and "--omp-wait-policy passive at 16 threads:" in finding.text
    assert "at 1 threads" not in finding.text


def test_the_sys_claim_names_the_machine_differences_that_can_account_for_it() -> None:
    sweep = _sweep_rows()
    here = {"fp_logical_cores": 2, "fp_openmp_runtime": "libgomp (GNU)", "fp_sandbox": "", "sys_s": 1.2,
            "user_s": 10.5, "fp_torch_threads": 2}
    finding = fnd.sys_claim("disagrees", 2.17, [r | {"user_s": 10.0, "sys_s": 2.0} for r in sweep],
                            {"logical_cores": 20}, here)
    assert finding is not None and finding.topic == "claim"
    text = finding.text
    assert "spent 2.17x as long in the kernel as in user mode; here it does not: even at 16 threads sys/user is 0.20" \
        in text
    assert "cores: 20 published against 2 here" in text and "0 -> 1,620 from 1 to 16 threads" in text
    assert "the OpenMP runtime: libgomp (GNU) here; the published machine's is not published" in text
    assert "sandbox" not in text
    sandboxed = fnd.sys_claim("disagrees", 2.17, sweep, {"logical_cores": 2}, here | {"fp_sandbox": "gvisor"})
    assert sandboxed is not None and "sandboxed kernel (gvisor)" in sandboxed.text and "cores:" not in sandboxed.text
    held = fnd.sys_claim("agrees", 2.17, sweep, {"logical_cores": 20}, here)
    assert held is not None and "holds here" in held.text
    assert fnd.sys_claim("not testable here", 2.17, sweep, {}, here) is None


def test_a_sys_claim_too_close_to_call_is_not_said_to_hold() -> None:
    sweep = [r | {"user_s": 10.0, "sys_s": 9.8} for r in _sweep_rows()]
    here = {"fp_logical_cores": 2, "fp_openmp_runtime": "", "fp_sandbox": "", "fp_torch_threads": 2}
    finding = fnd.sys_claim("too close to call", 2.17, sweep, {"logical_cores": 2}, here)
    assert finding is not None and "holds here" not in finding.text
    assert "here it does not: even at 16 threads sys/user is 0.98" in finding.text


def test_the_sys_claim_names_a_published_openmp_runtime_only_where_it_differs() -> None:
    here = {"fp_logical_cores": 2, "fp_openmp_runtime": "libgomp (GNU)", "fp_sandbox": "", "fp_torch_threads": 2}
    intel = fnd.sys_claim("disagrees", 2.17, _sweep_rows(), {"logical_cores": 2, "openmp_runtime": "Intel OpenMP"},
                          here)
    assert intel is not None
    assert "the OpenMP runtime: Intel OpenMP published against libgomp (GNU) here: their wait policies differ" in (
        intel.text)
    same = fnd.sys_claim("disagrees", 2.17, _sweep_rows(), {"logical_cores": 2, "openmp_runtime": "libgomp (GNU)"},
                         here)
    assert same is not None and "OpenMP runtime" not in same.text


# The auditor's --quick run on the 2-core VM: every run beside a busy neighbour, the seed's at
# 119% of a core; its step split had data wait at 11% of the step, compute at 89%.
AUDIT_BASE = {"device": "cpu", "loader": "reference", "allocator": "system", "epoch_s": 64.67,
              "samples_per_s": 1780.8, "step_median_ms": 71.88, "split_data_ms": 15.25, "split_copy_ms": 0.01,
              "split_compute_ms": 122.04, "split_sync_ms": 0.04, "neighbour_cpu_pct": 119.0}
AUDIT_TENSOR = AUDIT_BASE | {"loader": "tensor", "epoch_s": 7.11, "samples_per_s": 13872.6, "split_data_ms": 0.31,
                             "split_compute_ms": 13.10, "neighbour_cpu_pct": 35.2}


def test_a_loader_gain_beside_busy_neighbours_is_not_called_the_input_pipeline() -> None:
    base = {"cpu": AUDIT_BASE}
    (whatif,) = fnd.what_ifs([AUDIT_TENSOR], base)
    assert (whatif.neighbour_cpu_pct, whatif.base_neighbour_cpu_pct) == (35.2, 119.0)
    assert whatif.busy == ("other processes used 119% of a core during the seed configuration run and 35% during "
                           "the loader=tensor run, more than the 25% a comparison allows")
    (finding,) = fnd.pipeline_share([whatif], base)
    assert "was the input pipeline" not in finding.text and "share" not in finding.numbers
    assert finding.text.startswith("On cpu the input pipeline's share of the epoch is not estimated: other "
                                   "processes used 119% of a core during the seed configuration run")
    assert finding.numbers["contended"] == 1.0


def test_a_loader_gain_is_the_input_pipelines_only_up_to_the_step_splits_data_wait() -> None:
    quiet_base = AUDIT_BASE | {"neighbour_cpu_pct": 2.0}
    base = {"cpu": quiet_base}
    (finding,) = fnd.pipeline_share(fnd.what_ifs([AUDIT_TENSOR | {"neighbour_cpu_pct": 3.0}], base),
                                    base, published_gpu_real_s=76.44)
    input_share = (15.25 + 0.01) / (15.25 + 0.01 + 122.04 + 0.04)
    assert finding.numbers["input_share"] == pytest.approx(input_share)
    assert finding.numbers["share"] == pytest.approx(input_share)  # not the 89% the epochs differ by
    assert finding.numbers["gain"] == pytest.approx(1 - 7.11 / 64.67)
    assert "89% of the seed configuration's epoch was the input pipeline" not in finding.text
    assert "data wait and copy at only 11% of the seed configuration's step" in finding.text
    assert "host compute 122.04 -> 13.10 ms per step" in finding.text and "a loader does not change" in finding.text
    # A gain within the split's data wait is the input pipeline's.
    split = quiet_base | {"split_data_ms": 60.0, "split_compute_ms": 77.0}
    (held,) = fnd.pipeline_share(fnd.what_ifs([AUDIT_TENSOR | {"neighbour_cpu_pct": 3.0,
                                                                "epoch_s": 40.0}], {"cpu": split}), {"cpu": split})
    assert held.numbers["share"] == pytest.approx(1 - 40.0 / 64.67)
    assert "38% of the seed configuration's epoch was the input pipeline, as its step split allows" in held.text


def test_an_allocator_beside_busy_neighbours_compares_faults_not_times() -> None:
    from tests.analysis.test_kernel import ALLOCATOR_RUN, WAKEUPS_RUN

    base = ALLOCATOR_RUN | {"step_median_ms": 71.88, "neighbour_cpu_pct": 119.0}
    jemalloc = WAKEUPS_RUN | {"threads": 1, "allocator": "jemalloc", "step_median_ms": 12.75,
                              "neighbour_cpu_pct": 67.5}
    (finding,) = fnd.allocator_effect([jemalloc], {"cpu": base})
    assert finding.text == ("--allocator jemalloc: minor faults per step 895 -> 15; its sys and step times are not "
                            "compared: other processes used 119% of a core during the seed configuration run and 68% "
                            "during the threads=1,allocator=jemalloc run, more than the 25% a comparison allows.")
    assert "speedup" not in finding.numbers and "ms" not in finding.text


def test_thread_and_policy_comparisons_beside_busy_neighbours_assert_no_cause() -> None:
    from tests.analysis.test_kernel import OVERSUBSCRIBED_RUN

    rows = [cpu(1, 10.0, 1.0, 5000, cores=2), cpu(2, 12.0, 1.2, 9000, cores=2, neighbour_cpu_pct=90.0)]
    finding = fnd.thread_scaling(rows)
    assert finding is not None and finding.numbers["contended"] == 1.0
    assert "no sign of spin-waiting" not in finding.text and "Sys does not grow" not in finding.text
    assert "is not read from this: other processes used 90% of a core during the 2-thread run" in finding.text
    default = OVERSUBSCRIBED_RUN | {"samples_per_s": 4000.0, "neighbour_cpu_pct": 90.0}
    active = OVERSUBSCRIBED_RUN | {"omp_wait_policy": "active", "samples_per_s": 2000.0}
    policy = fnd.wait_policy_effect([default], [active])
    assert policy is not None and "samples/s" not in policy.text
    assert "--omp-wait-policy active at 16 threads is not compared: other processes used 90% of a core" in policy.text


def test_the_contention_finding_names_each_busy_run() -> None:
    finding = fnd.contention([AUDIT_BASE | {"epochs": 1}, AUDIT_TENSOR | {"epochs": 1},
                              AUDIT_BASE | {"loader": "device", "neighbour_cpu_pct": 4.0}])
    assert finding is not None and finding.numbers["contended_runs"] == 2.0
    assert finding.text.startswith("Other processes competed for the CPU during 2 of 3 runs, using more than 25% "
                                   "of a core while they trained (cpu seed configuration (1 epoch) 119%, cpu "
                                   "loader=tensor (1 epoch) 35%)")
    assert fnd.contention([AUDIT_BASE | {"neighbour_cpu_pct": 4.0}]) is None


def test_the_step_split_says_its_step_is_a_mean() -> None:
    finding = fnd.step_split(AUDIT_BASE)
    assert finding is not None and "a training step took 137.34 ms on the host (mean over its steps)" in finding.text


def test_the_sys_claim_says_the_pool_grows_kernel_time_only_where_the_sweep_shows_it() -> None:
    here = {"fp_logical_cores": 2, "fp_openmp_runtime": "", "fp_sandbox": "", "sys_s": 1.465, "user_s": 56.66,
            "fp_torch_threads": 2}
    # --quick: no sweep, so nothing says how kernel time grows with the pool.
    quick = fnd.sys_claim("disagrees", 2.17, [], {"logical_cores": 20}, here)
    assert quick is not None and "Kernel time here" not in quick.text
    assert "No thread sweep here shows how kernel time grows with the pool" in quick.text
    # The auditor's sweep: sys x0.89 against user x0.97 from 1 to 4 threads.
    sweep = [cpu(1, 6.40, 0.70, 8384, cores=2), cpu(4, 6.23, 0.63, 7193, cores=2)]
    scaling = fnd.thread_scaling(sweep)
    assert scaling is not None and "Sys does not grow faster than user" in scaling.text
    flat = fnd.sys_claim("disagrees", 2.17, sweep, {"logical_cores": 20}, here)
    assert flat is not None and "Kernel time here does not grow faster than user time with the pool" in flat.text
    assert "sys went x0.90, user x0.97" in flat.text
    growing = [cpu(1, 10.0, 1.0, 5000, cores=2), cpu(4, 12.0, 9.0, 6000, cores=2)]
    grown = fnd.sys_claim("disagrees", 2.17, growing, {"logical_cores": 20}, here)
    assert grown is not None and "Kernel time here grows faster than user time with the pool" in grown.text
    busy = [growing[0], growing[1] | {"neighbour_cpu_pct": 80.0}]
    unknown = fnd.sys_claim("disagrees", 2.17, busy, {"logical_cores": 20}, here)
    assert unknown is not None and "grows faster" not in unknown.text and "busy neighbours" in unknown.text


def test_the_sys_claim_does_not_lean_on_a_pool_growth_near_the_cut() -> None:
    here = {"fp_logical_cores": 2, "fp_openmp_runtime": "", "fp_sandbox": "", "sys_s": 1.465, "user_s": 56.66,
            "fp_torch_threads": 2}
    near = [cpu(1, 10.0, 1.0, 5000, cores=2), cpu(4, 10.0, 1.26, 6000, cores=2)]  # sys x1.26, user x1.00
    finding = fnd.sys_claim("disagrees", 2.17, near, {"logical_cores": 20}, here)
    assert finding is not None and "Kernel time here grows" not in finding.text and "does not grow" not in finding.text
    assert ("Whether kernel time here grows faster than user time with the pool is not settled: it grew 1.26x as "
            "fast (from 1 to 4 threads sys went x1.26, user x1.00), within 15% of the 1.25x") in finding.text


def test_the_published_cores_difference_does_not_assert_sys_grows_with_threads() -> None:
    finding = fnd.machine_finding("20-core CPU", {"logical_cores": 20}, {"fp_logical_cores": 2})
    assert finding is not None and "kernel (sys) time can grow with threads" in finding.text
