from __future__ import annotations

from vaebench.analysis.summary import format_run
from vaebench.result import ProcessUsage, RunRecord
from vaebench.spec import RunSpec


def record(fingerprint: dict[str, str]) -> RunRecord:
    usage = ProcessUsage(2.0, 1.5, 0.4, 800.0, 10, 5, 0)
    return RunRecord(spec=RunSpec(), run_id="r1", started_at="now", process=usage, fingerprint=fingerprint)


def test_a_sandboxed_run_says_whose_accounting_sys_time_is() -> None:
    text = format_run(record({"sandbox": "gvisor", "kernel": "4.4.0"}))
    line = next(line for line in text.splitlines() if line.strip().startswith("sandbox"))
    assert "gvisor" in line and "sys time and context switches" in line and "not the host kernel" in line
    assert "sandbox" not in format_run(record({"sandbox": "", "kernel": "6.8.0"}))
    assert "sandbox" not in format_run(record({}))


def test_a_data_parallel_run_shows_its_ranks_and_scaling() -> None:
    import dataclasses

    from vaebench.result import RankStats, StepSplit, TrainMetrics

    train = TrainMetrics(
        t_import_s=1.0, t_data_s=0.5, t_model_s=0.1, t_first_step_s=0.1, train_s=4.6, steps_done=100,
        samples_seen=25600, warmup_steps=10, step_median_ms=43.6, step_iqr_ms=1.0, samples_per_s=5873.0,
        epoch_s=4.6, final_loss=231.9, epoch_losses=[231.9], epoch_times_s=[4.6], split=StepSplit(13.9, 0.0, 31.0, 0.1),
        model_flops_per_s=2e10, peak_flops_per_s=1.8e11, flops_frac=0.12,
        ranks=RankStats(rank_step_median_ms=[43.59, 42.03], rank_allreduce_ms=[18.0, 19.8], allreduce_ms=18.9,
                        allreduce_share=0.43),
    )
    two = dataclasses.replace(record({}), spec=RunSpec(nproc_per_node=2), train=train,
                              scaling_efficiency=0.405, single_rank_samples_per_s=7247.0)
    text = format_run(two)
    assert "2 x batch 128 = global batch 256 (gloo, 1 host)" in text
    assert "median step per rank 43.59, 42.03 ms" in text
    assert "18.900 ms per step, inside compute (43% of the step)" in text
    assert "efficiency 0.41: 5873 samples/s on 2 ranks vs 2 x 7247 of one rank" in text
    alone = dataclasses.replace(two, scaling_efficiency=float("nan"))
    assert "efficiency n/a: no one-rank run" in format_run(alone)
    row = two.to_row()
    assert row["world_size"] == 2 and row["global_batch"] == 256 and row["scaling_efficiency"] == 0.405


def test_the_kernel_time_line_gives_the_counters_per_step_and_the_cause() -> None:
    from vaebench.result import MonitorSummary, StepSplit, SyscallCount, SyscallTable, TrainMetrics, TrainUsage

    train = TrainMetrics(
        t_import_s=1.0, t_data_s=1.0, t_model_s=0.0, t_first_step_s=0.1, train_s=11.37, steps_done=300,
        samples_seen=38_400, warmup_steps=10, step_median_ms=27.0, step_iqr_ms=1.0, samples_per_s=4628.0,
        epoch_s=11.37, final_loss=183.2, epoch_losses=[183.2], epoch_times_s=[11.37], split=StepSplit(),
        model_flops_per_s=1e10, peak_flops_per_s=1e11, flops_frac=0.1,
        usage=TrainUsage(train_user_s=7.1417, train_sys_s=1.6423, train_minor_faults=12273.0,
                         train_ctx_voluntary=486142.0, train_ctx_involuntary=33692.0),
    )
    usage = ProcessUsage(13.0, 10.8, 2.24, 800.0, 500_000, 40_000, 0, main_cpu_s=12.05, minor_faults=140_000,
                         major_faults=0)
    monitor = MonitorSummary(runqueue_wait_s=50.4776, os_threads_max=32, runnable_max=16, runnable_mean=6.4)
    table = SyscallTable("strace -c -f", (SyscallCount("futex", 47_017, 10_485, 4.409),
                                          SyscallCount("newfstatat", 36_253, 1_239, 0.232)), steps=300, real_s=11.0)
    record = RunRecord(spec=RunSpec(threads=16, omp_wait_policy="passive"), run_id="r1", started_at="now",
                       process=usage, train=train, monitor=monitor, syscalls=table,
                       fingerprint={"usable_cores": 2, "logical_cores": 2, "torch_threads": 16})
    lines = format_run(record).splitlines()
    kernel = next(line for line in lines if line.strip().startswith("kernel"))
    assert kernel.strip() == (
        "kernel    sys/user 0.23, 41 minor faults/step, 1,733 context switches/step (1,620 voluntary), run-queue "
        "wait 168.3 ms/step; 16 threads on 2 cores (oversubscribed); 32 OS threads, at most 16 runnable at once")
    cause = next(line for line in lines if line.strip().startswith("cause:"))
    assert "oversubscription" in cause and "--threads at most the usable cores" in cause
    assert any("syscalls  strace -c -f, a separate traced run (300 steps" in line for line in lines)
    assert any(line.split()[:2] == ["futex", "47,017"] for line in lines)
    futex = lines.index(next(line for line in lines if line.split()[:1] == ["futex"]))
    assert "futex's include the time threads slept in it" in "".join(lines[futex:])  # 4.4 s against 1.6 of sys
    assert record.to_row()["oversubscribed"] is True


def test_no_kernel_line_without_training_window_counters() -> None:
    assert "kernel" not in format_run(record({}))


def test_a_run_beside_a_busy_neighbour_is_flagged_with_the_figure() -> None:
    import dataclasses

    from vaebench.result import MonitorSummary
    from vaebench.rules import NEIGHBOUR_LIMIT_PCT

    def with_neighbour(pct: float) -> str:
        base = record({})
        return format_run(dataclasses.replace(base, monitor=MonitorSummary(cpu_util_mean=90.0, neighbour_cpu_pct=pct)))

    busy = with_neighbour(97.0)
    warning = next(line for line in busy.splitlines() if "WARNING" in line)
    assert "97% of a core" in warning and f"{NEIGHBOUR_LIMIT_PCT:.0f}%" in warning and "not its own" in warning
    quiet = with_neighbour(3.0)
    assert "WARNING" not in quiet and "outside this run: 3% of a core" in quiet


def test_the_profile_line_gives_device_time_per_step_and_underfilled_kernels() -> None:
    import dataclasses

    from vaebench.result import ProfileStats, StepSplit, TrainMetrics

    profile = ProfileStats(profile_trace="t.json", profile_busy_fraction=0.57, profile_busy_source="trace",
                           profile_kernels_per_step=101.0, profile_overhead_pct=52.3,
                           profile_busy_ms_per_step=0.2673, profile_underfilled_share=0.81)
    train = TrainMetrics(
        t_import_s=1.0, t_data_s=0.5, t_model_s=0.1, t_first_step_s=0.1, train_s=1.4, steps_done=4690,
        samples_seen=600_000, warmup_steps=10, step_median_ms=0.288, step_iqr_ms=0.01, samples_per_s=444_939.0,
        epoch_s=0.14, final_loss=102.7, epoch_losses=[102.7], epoch_times_s=[0.14], split=StepSplit(),
        model_flops_per_s=1e12, peak_flops_per_s=5e13, flops_frac=0.02, profile=profile,
    )
    line = next(line for line in format_run(dataclasses.replace(record({}), train=train)).splitlines()
                if line.strip().startswith("profile"))
    assert "busy 57.0% [trace] (0.267 ms per step)" in line
    assert "101.0 kernels/step, 81% of kernel time in grids smaller than the GPU" in line
    no_args = dataclasses.replace(profile, profile_underfilled_share=float("nan"))
    assert "grids" not in format_run(dataclasses.replace(record({}), train=dataclasses.replace(train, profile=no_args)))
    cpu = dataclasses.replace(profile, profile_kernels_per_step=0.0, profile_underfilled_share=float("nan"))
    cpu_run = dataclasses.replace(record({}), train=dataclasses.replace(train, profile=cpu))
    assert "kernels/step" not in format_run(cpu_run)
