"""`vaebench reproduce`: the plan, the comparison table fed fixed rows, and the command end to end
(once with a fake runner, fast; once for real on tiny data, slow)."""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest

from vaebench import storage
from vaebench.cli import main
from vaebench.errors import Interrupted
from vaebench.machine import capabilities
from vaebench.measure.run import RunOptions, new_run_id
from vaebench.reproduce import claim as claims
from vaebench.reproduce import plan as reproduce
from vaebench.reproduce import report as reproduce_report
from vaebench.reproduce.plan import BASELINE, POLICY, SEED, SWEEP, WHAT_IF
from vaebench.result import DataInfo, ProcessUsage, RunRecord, StepSplit, TrainMetrics
from vaebench.spec import RunSpec

BLOG = claims.load()


def roles(plan: reproduce.Plan) -> list[tuple[str, int, int | None, str, str, tuple[str, ...]]]:
    return [(r.spec.device, r.spec.epochs, r.spec.threads, r.spec.loader, r.spec.compile, r.roles) for r in plan.runs]


def test_thread_counts_double_up_to_the_cores_then_oversubscribe() -> None:
    assert reproduce.thread_counts(1) == [1, 2]
    assert reproduce.thread_counts(2) == [1, 2, 4]
    assert reproduce.thread_counts(6) == [1, 2, 4, 6, 12]
    assert reproduce.thread_counts(16) == [1, 2, 4, 8, 16, 32]


def test_quick_plan_on_a_cpu_only_machine() -> None:
    plan = reproduce.make_plan(BLOG.run, ["cpu"], quick=True, data="embedded", cores=2, default_threads=2)
    assert roles(plan) == [
        ("cpu", 1, None, "reference", "off", (SEED, BASELINE)),  # the quick seed run is the what-if baseline
        ("cpu", 1, None, "tensor", "off", (WHAT_IF,)),
        ("cpu", 1, None, "device", "off", (WHAT_IF,)),
    ]
    seed = plan.runs[0].spec
    assert (seed.batch_size, seed.lr, seed.data, seed.samples) == (128, 1e-3, "embedded", 60_000)


def test_full_plan_runs_the_all_cores_point_once() -> None:
    plan = reproduce.make_plan(BLOG.run, ["cpu"], quick=False, data="embedded", cores=2, default_threads=2)
    assert roles(plan)[:6] == [
        ("cpu", 10, None, "reference", "off", (SEED,)),
        ("cpu", 1, None, "reference", "off", (BASELINE, SWEEP)),
        ("cpu", 1, None, "tensor", "off", (WHAT_IF,)),
        ("cpu", 1, None, "device", "off", (WHAT_IF,)),
        ("cpu", 1, 1, "reference", "off", (SWEEP,)),
        ("cpu", 1, 4, "reference", "off", (SWEEP,)),  # twice the cores: oversubscribed
    ]
    # Every count of the thread sweep also runs with both wait policies, after the rest.
    policies = [(r.spec.threads, r.spec.omp_wait_policy) for r in plan.runs if POLICY in r.roles]
    assert sorted(policies, key=str) == sorted([(t, p) for t in (None, 1, 4) for p in ("active", "passive")], key=str)
    assert all(r.roles == (POLICY,) for r in plan.runs[6:])


def test_each_allocator_found_here_is_a_cpu_what_if() -> None:
    plan = reproduce.make_plan(BLOG.run, ["cpu"], quick=True, data="embedded", cores=2, default_threads=2,
                               allocators=("jemalloc", "tcmalloc"))
    whatifs = [(r.spec.loader, r.spec.allocator) for r in plan.runs if WHAT_IF in r.roles]
    assert whatifs == [("tensor", "system"), ("device", "system"), ("reference", "jemalloc"),
                       ("reference", "tcmalloc")]
    assert not any(POLICY in r.roles for r in plan.runs)  # --quick: no thread sweep, no policies


def test_full_plan_with_a_gpu_and_hyperthreads() -> None:
    plan = reproduce.make_plan(BLOG.run, ["cuda:0", "cpu"], quick=False, data="mnist", cores=8, default_threads=4)
    got = roles(plan)
    seeds = [("cuda:0", 10, None, "reference", "off", (SEED,)), ("cpu", 10, None, "reference", "off", (SEED,))]
    assert got[:2] == seeds
    assert ("cuda:0", 1, None, "device", "reduce-overhead", (WHAT_IF,)) in got
    gpu_whatifs = [s.spec for s in plan.runs if s.spec.device == "cuda:0" and WHAT_IF in s.roles]
    assert [(s.loader, s.pin_memory, s.sync, s.cuda_graphs, s.compile) for s in gpu_whatifs] == [
        ("tensor", True, "step", False, "off"),  # the ladder's rungs, each one knob more
        ("device", False, "step", False, "off"),
        ("device", False, "epoch", False, "off"),
        ("device", False, "epoch", True, "off"),
        ("device", False, "epoch", False, "reduce-overhead"),
    ]
    assert not any(r[0] == "cuda:0" and SWEEP in r[5] for r in got)
    sweep = sorted((r[2] or 4) for r in got if SWEEP in r[5])
    assert sweep == [1, 2, 4, 8, 16]  # 4 = torch's default: the default-threads short run; 16 oversubscribes
    assert ("cpu", 1, None, "reference", "off", (BASELINE, SWEEP)) in got


def test_epochs_size_the_seed_runs_and_the_report_says_so() -> None:
    plan = reproduce.make_plan(BLOG.run, ["cpu"], quick=False, data="embedded", epochs=3, cores=2, default_threads=2)
    assert plan.runs[0].spec.epochs == 3 and SEED in plan.runs[0].roles
    comparison = reproduce_report.compare(BLOG, MEASURED, epochs=3)
    assert any("3 epochs instead of 10" in note for note in comparison.notes)


def row(device: str, roles_: str, epochs: int, real: float, user: float, sys_: float, **extra: object) -> dict:
    base = {"status": "ok", "device": device, "roles": roles_, "epochs": epochs, "real_s": real, "user_s": user,
            "sys_s": sys_, "cpu_pct": 100 * (user + sys_) / real, "final_loss": 105.0, "data_source": "embedded-5k",
            "data_samples": 60000, "fp_logical_cores": 2, "fp_torch_threads": 2, "threads": None, "loader": "reference",
            "compile": "off", "epoch_s": real / epochs, "samples_per_s": 5000.0, "fp_gpu_name": "", "fp_torch": "2.14"}
    return base | extra


MEASURED = pd.DataFrame([
    row("cpu", "seed", 10, 120.0, 180.0, 15.0, split_data_ms=6.0, split_copy_ms=0.0, split_compute_ms=9.0,
        split_sync_ms=0.0),
    row("cpu", "baseline,sweep", 1, 14.0, 19.0, 1.5, epoch_s=12.0),
    row("cpu", "sweep", 1, 20.0, 17.0, 0.9, threads=1, samples_per_s=3500.0),
    row("cpu", "what-if", 1, 8.0, 9.0, 0.7, loader="device", epoch_s=4.0, samples_per_s=15000.0),
    {"status": "failed", "device": "cpu", "roles": "what-if", "reason": "crashed: killed by SIGKILL",
     "loader": "tensor"},
])


def test_the_comparison_table_on_a_cpu_only_machine() -> None:
    comparison = reproduce_report.compare(BLOG, MEASURED, quick=False, cuda_devices=0)
    table = comparison.table
    assert table["source"].tolist() == ["measured", "published", "published"]
    assert table["device"].tolist() == ["cpu (2 cores, 2 threads)", "RTX 3090", "20-core CPU (all cores)"]
    assert table.loc[0, ["real_s", "user_s", "sys_s"]].tolist() == [120.0, 180.0, 15.0]
    assert table.loc[1, ["real_s", "user_s", "sys_s", "gpu_util_mean"]].tolist() == [76.44, 83.738, 32.552, 7.0]
    assert table.loc[2, "sys_s"] == 1528.952 and math.isnan(table.loc[2, "gpu_util_mean"])
    assert table["data"].tolist() == ["embedded-5k", "mnist", "mnist"]
    outcomes = [(v.relation.id, v.outcome) for v in comparison.verdicts]
    assert outcomes == [("gpu-faster", "not testable here"), ("gpu-mostly-idle", "not testable here"),
                        ("cpu-sys-above-user", "disagrees")]
    assert comparison.verdicts[2].measured == pytest.approx(15 / 180)
    assert [(w.change, w.speedup) for w in comparison.whatifs] == [("loader=device", 3.0)]
    assert comparison.threads["threads"].tolist() == [1, 2]
    topics = [f.topic for f in comparison.findings]
    assert topics == ["step-split", "threads", "claim", "pipeline", "machine", "machine"]
    claim = next(f for f in comparison.findings if f.topic == "claim")
    assert "here it does not: even at 2 threads sys/user is 0.08" in claim.text
    assert "cores: 20 published against 2 here" in claim.text
    assert any("No CUDA GPU measured here" in n for n in comparison.notes)
    assert any("embedded-5k" in n and "mnist" in n for n in comparison.notes)
    assert comparison.failed == ["cpu, loader=tensor (what-if): crashed: killed by SIGKILL"]
    assert comparison.short_epochs == 1


def test_repeats_of_a_short_run_are_compared_as_their_medians() -> None:
    # --force measured the baseline and the what-if three times each; the seed row stays the latest run.
    seed = pd.concat([MEASURED.iloc[[0]].assign(real_s=130.0), MEASURED.iloc[[0]]]).assign(spec_key="seed")
    base = pd.DataFrame([row("cpu", "baseline,sweep", 1, 14.0, 19.0, 1.5, epoch_s=e, spec_key="base")
                         for e in (12.0, 15.0, 11.0)])
    device = pd.DataFrame([row("cpu", "what-if", 1, 8.0, 9.0, 0.7, loader="device", epoch_s=e,
                               samples_per_s=15000.0, spec_key="device") for e in (4.0, 3.0, 5.0)])
    comparison = reproduce_report.compare(BLOG, pd.concat([seed, base, device], ignore_index=True), cuda_devices=0)
    (whatif,) = comparison.whatifs
    assert (whatif.change, whatif.epoch_s, whatif.speedup, whatif.runs) == ("loader=device", 4.0, 3.0, 3)
    assert comparison.table["real_s"].tolist()[:2] == [120.0, 76.44]  # the seed's latest run, then the published
    pipeline = next(f for f in comparison.findings if f.topic == "pipeline")
    assert "ran an epoch in 4.00 s against the reference pipeline's 12.00 s (3.00x, medians of 3 runs each)" in (
        pipeline.text)


def test_the_printed_text_marks_published_rows_and_verdicts(tmp_path: Path) -> None:
    comparison = reproduce_report.compare(BLOG, MEASURED, quick=False, cuda_devices=0)
    text = reproduce_report.render_text(comparison)
    for part in ("GPU util % (NVML utilization.gpu)", "published  RTX 3090", "76.440", "1528.952", "~7",
                 "cpu-sys-above-user: DISAGREES", "gpu-faster: not testable here", "published: gpu.real_s / "
                 "cpu.real_s = 0.66x", "What if", "CPU threads (1-epoch runs each)", "Findings:", "input pipeline"):
        assert part in text, part
    path = reproduce_report.write(comparison, tmp_path)
    assert path == tmp_path / "reproduce.md"
    markdown = path.read_text()
    assert "| published | RTX 3090 | mnist | 10 | 76.440 |" in markdown and "reproduce.png" in markdown
    csv = pd.read_csv(tmp_path / "reproduce.csv")
    assert csv["source"].tolist() == ["measured", "published", "published"]
    assert (tmp_path / "reproduce.png").stat().st_size > 5000


def test_busy_neighbours_are_flagged_in_the_tables_and_notes(tmp_path: Path) -> None:
    busy = MEASURED.copy()
    busy["neighbour_cpu_pct"] = [119.0, 119.0, 4.0, 35.2, math.nan]
    comparison = reproduce_report.compare(BLOG, busy, quick=False, cuda_devices=0)
    (whatif,) = comparison.whatifs
    assert (whatif.neighbour_cpu_pct, whatif.base_neighbour_cpu_pct) == (35.2, 119.0)
    text = reproduce_report.render_text(comparison)
    assert "35 / 119 busy" in text and "busy: processes outside the run used more than 25% of a core" in text
    threads = {r["threads"]: r["neighbour_cpu_pct"] for r in comparison.threads.to_dict("records")}
    assert threads == {1: 4.0, 2: 119.0}
    assert "119 busy" in reproduce_report.render_markdown(comparison)
    assert any(n.startswith("The cpu (2 cores, 2 threads) seed run trained beside other processes using 119% of a "
                            "core") for n in comparison.notes)
    pipeline = next(f for f in comparison.findings if f.topic == "pipeline")
    assert "not estimated" in pipeline.text and "was the input pipeline" not in pipeline.text
    quiet = reproduce_report.compare(BLOG, MEASURED, quick=False, cuda_devices=0)
    assert "busy" not in reproduce_report.render_text(quiet)
    assert reproduce_report.neighbour_cell(math.nan, math.nan) == "-"
    assert reproduce_report.neighbour_cell(12.4) == "12"


def test_the_notes_and_figure_say_how_many_epochs_each_row_ran() -> None:
    comparison = reproduce_report.compare(BLOG, MEASURED, epochs=3, cuda_devices=0)
    epochs = next(n for n in comparison.notes if "instead of 10" in n)
    # Was: "real times are about 3/10 of the published ones", which they are not.
    assert "3/10 of the published" not in epochs
    assert "about 3/10 of what a 10-epoch run here would take" in epochs
    assert any("docs/examples/nvidia-h200/README.md" in n for n in comparison.notes)  # the GPU half, elsewhere
    fig = reproduce_report.figure(comparison)
    assert fig is not None
    ax = fig.axes[0]
    labels = [label.get_text() for label in ax.get_xticklabels()]
    assert labels[0].endswith("(embedded-5k, 10 epochs)") and labels[1].endswith("(published, 10 epochs)")
    assert "published (hatched, 10 epochs)" in ax.get_title()


def test_no_successful_run_says_so_instead_of_empty_findings(tmp_path: Path) -> None:
    failed = pd.DataFrame([{"status": "failed", "device": "cpu", "roles": "seed,baseline", "reason": "timeout",
                            "loader": "reference"}])
    comparison = reproduce_report.compare(BLOG, failed, quick=True, cuda_devices=0)
    assert comparison.findings == [] and comparison.succeeded == 0
    text = reproduce_report.render_text(comparison)
    assert text.endswith("Findings:\n  None: no run succeeded (the failures are listed above).")
    markdown = reproduce_report.render_markdown(comparison)
    assert "## Findings\n\nNone: no run succeeded" in markdown
    assert "No thread sweep with --quick, so reproduce_threads.csv holds only its header" in markdown


def test_the_whatif_csv_names_its_knobs_as_plain_text(tmp_path: Path) -> None:
    gpu_rows = pd.DataFrame([row("cuda:0", "seed,baseline", 1, 10.0, 9.0, 1.0),
                             row("cuda:0", "what-if", 1, 5.0, 4.0, 1.0, loader="tensor", pin_memory=True)])
    comparison = reproduce_report.compare(BLOG, gpu_rows, quick=True, cuda_devices=1)
    reproduce_report.write(comparison, tmp_path)
    csv = pd.read_csv(tmp_path / "reproduce_whatif.csv")
    assert csv["knobs"].tolist() == ["loader,pin_memory"]  # was "('loader', 'pin_memory')"


def test_a_gpu_row_is_judged_and_labelled() -> None:
    gpu = row("cuda:0", "seed", 10, 60.0, 70.0, 20.0, gpu_util_mean=9.0, fp_gpu_name="NVIDIA H100",
              split_data_ms=1.2, split_copy_ms=0.05, split_compute_ms=0.5, split_sync_ms=0.25,
              split_device_copy_ms=0.02, split_device_compute_ms=0.28)
    measured = pd.concat([MEASURED, pd.DataFrame([gpu])], ignore_index=True)
    comparison = reproduce_report.compare(BLOG, measured, quick=False, cuda_devices=1)
    assert "cuda:0 (NVIDIA H100)" in comparison.table["device"].tolist()
    outcomes = {v.relation.id: v.outcome for v in comparison.verdicts}
    assert outcomes == {"gpu-faster": "agrees", "gpu-mostly-idle": "agrees", "cpu-sys-above-user": "disagrees"}
    assert not any("No CUDA GPU measured" in n for n in comparison.notes)
    split = next(f for f in comparison.findings if f.topic == "step-split" and "cuda:0" in f.text)
    assert "stream time, not busy time" in split.text and "NVML utilization.gpu averaged 9%" in split.text
    assert "idle" not in split.text  # no busy measure here: the events alone cannot say the GPU idled


def fake_run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
    """A record with plausible numbers that depend on the spec, appended like run_once does."""
    threads = spec.threads or 2
    epoch = {"reference": 12.0, "tensor": 6.0, "device": 4.0}[spec.loader] * (1.4 if threads == 1 else 1.0)
    train = TrainMetrics(
        t_import_s=1.0, t_data_s=1.0, t_model_s=0.0, t_first_step_s=0.1, train_s=epoch * spec.epochs,
        steps_done=469 * spec.epochs, samples_seen=60_000 * spec.epochs, warmup_steps=10, step_median_ms=epoch / 0.469,
        step_iqr_ms=0.5, samples_per_s=60_000 / epoch, epoch_s=epoch, final_loss=110.0,
        epoch_losses=[110.0] * spec.epochs, epoch_times_s=[epoch] * spec.epochs,
        split=StepSplit(data_ms=epoch / 0.469 * 0.4, copy_ms=0.0, compute_ms=epoch / 0.469 * 0.6, sync_ms=0.0),
        model_flops_per_s=1e10, peak_flops_per_s=2e11, flops_frac=0.05,
    )
    real = 3.0 + epoch * spec.epochs
    usage = ProcessUsage(real_s=real, user_s=real * min(threads, 2) * 0.7, sys_s=real * 0.05 * threads,
                         peak_rss_mb=800.0, ctx_voluntary=10, ctx_involuntary=100, exit_code=0)
    record = RunRecord(spec=spec, run_id=new_run_id(), started_at="2026-01-01T00:00:00+00:00", data=data,
                       process=usage, train=train, repeat=options.repeat, sweep=options.sweep,
                       fingerprint={"logical_cores": 2, "physical_cores": psutil.cpu_count(logical=False) or 1,
                                    "torch_threads": threads, "cpu_model": "Test CPU",
                                    "gpu_name": "", "torch": "2.14.1"})
    storage.append(options.out, record)
    return record


def test_reproduce_command_with_a_fake_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from vaebench import machine

    monkeypatch.setattr(reproduce, "run_once", fake_run)
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: ())  # no allocator what-ifs: a fixed plan
    out = tmp_path / "out"
    args = ["reproduce", "--device", "cpu", "--data", "synthetic", "--samples", "256", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "12 runs on cpu with synthetic" in text  # 6, and both wait policies at each of 3 thread counts
    assert "published  RTX 3090" in text and "cpu-sys-above-user: DISAGREES" in text
    assert "From 1 to 4 threads on 2 cores" in text and "oversubscribed" in text
    assert "loader=device ran an epoch in 4.00 s against the reference pipeline's 12.00 s (3.00x)" in text
    for name in ("reproduce.md", "reproduce.csv", "reproduce.png", "report.md", "summary.csv", "times.png"):
        assert (out / name).exists(), name
    assert len(storage.read_rows(out)) == 12
    # A second run reuses what the folder holds.
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "reused 12 runs" in text
    assert f"12 runs on cpu with synthetic (256 samples/epoch); all already in {out}, none to run" in text
    assert "about" not in text.splitlines()[0]  # was "12 runs ..., about 1:04" with nothing to run
    assert len(storage.read_rows(out)) == 12


def test_reproduce_measured_again_reads_each_short_run_as_the_median_of_its_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from vaebench import machine

    monkeypatch.setattr(reproduce, "run_once", fake_run)
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: ())
    out = tmp_path / "out"
    args = ["reproduce", "--device", "cpu", "--data", "synthetic", "--samples", "256", "--quick", "--out", str(out)]
    assert main(args) == 0 and main([*args, "--force"]) == 0
    text = capsys.readouterr().out.split("Findings:")[-1]
    assert "loader=device ran an epoch in 4.00 s against the reference pipeline's 12.00 s (3.00x, medians of 2 runs " \
           "each)" in text
    plan = reproduce.plan_of_folder(BLOG.run, out, quick=True)
    assert reproduce.collect(plan, out)["roles"].tolist() == ["seed,baseline"] * 2 + ["what-if"] * 4


def stop_after(runs: int, stop: BaseException) -> Callable[[RunSpec, DataInfo, RunOptions], RunRecord]:
    """`fake_run` for the first `runs` runs, then the stop (Ctrl-C, SIGTERM) while the next one trains."""
    done: list[RunRecord] = []

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        if len(done) == runs:
            raise stop
        done.append(fake_run(spec, data, options))
        return done[-1]

    return run


STOPS = [(KeyboardInterrupt(), 130), (Interrupted(signal.SIGTERM), 143)]


def _reproduce_stopped(monkeypatch: pytest.MonkeyPatch, out: Path, runs: int, stop: BaseException) -> int:
    """A quick CPU reproduce into `out` whose (runs + 1)-th run is stopped by `stop`; its exit status."""
    from vaebench import machine

    monkeypatch.setattr(reproduce, "run_once", stop_after(runs, stop))
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: ())
    return main(["reproduce", "--device", "cpu", "--data", "synthetic", "--samples", "256", "--quick",
                 "--out", str(out)])


@pytest.mark.parametrize(("stop", "status"), STOPS)
def test_a_stop_before_any_run_finished_exits_as_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: BaseException,
        status: int) -> None:
    out = tmp_path / "out"
    assert _reproduce_stopped(monkeypatch, out, 0, stop) == status  # was 2: the empty folder judged
    err = capsys.readouterr().err
    assert f"interrupted before any run finished, so {out} holds nothing to report on" in err
    assert "no results" not in err and "error" not in err
    assert not (out / "reproduce.md").exists()


@pytest.mark.parametrize(("stop", "status"), STOPS)
def test_a_stop_after_some_runs_judges_them_then_exits_as_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: BaseException,
        status: int) -> None:
    out = tmp_path / "out"
    assert _reproduce_stopped(monkeypatch, out, 1, stop) == status
    assert "interrupted; what finished is kept: run the same command again to finish" in capsys.readouterr().err
    assert len(storage.read_rows(out)) == 1 and (out / "reproduce.md").exists()


def test_report_only_judges_a_folder_as_its_runs_were_planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from vaebench import machine

    monkeypatch.setattr(reproduce, "run_once", fake_run)
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: ())
    base = ["reproduce", "--device", "cpu", "--data", "synthetic", "--samples", "256"]
    quick, full = tmp_path / "quick", tmp_path / "full"
    assert main([*base, "--quick", "--out", str(quick)]) == 0
    assert main([*base, "--out", str(full)]) == 0
    capsys.readouterr()
    # The quick plan's runs are all part of the full plan's: each folder is judged as it was planned.
    assert reproduce.sizing_of_folder(BLOG.run, quick) == (True, None)
    assert reproduce.sizing_of_folder(BLOG.run, full) == (False, None)
    assert main(["reproduce", "--report-only", "--out", str(quick)]) == 0
    text = capsys.readouterr().out
    assert "as planned with --quick (read from the runs" in text and "cpu-sys-above-user: DISAGREES" in text
    assert main(["reproduce", "--report-only", "--out", str(full)]) == 0
    text = capsys.readouterr().out
    assert "as planned in full" in text and "From 1 to 4 threads on 2 cores" in text
    # What the command line gives is taken as given.
    assert main(["reproduce", "--report-only", "--quick", "--out", str(full)]) == 0
    assert "read from the runs" not in capsys.readouterr().out


def test_report_only_refuses_a_sizing_the_folder_has_no_seed_runs_of(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from vaebench import machine

    monkeypatch.setattr(reproduce, "run_once", fake_run)
    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: ())
    quick = tmp_path / "quick"
    assert main(["reproduce", "--device", "cpu", "--data", "synthetic", "--samples", "256", "--quick",
                 "--out", str(quick)]) == 0
    good = (quick / "reproduce.md").read_text()
    capsys.readouterr()
    # Was: exit 0, an empty measured table, and reproduce.md overwritten with it.
    assert main(["reproduce", "--report-only", "--epochs", "3", "--out", str(quick)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--report-only --epochs 3: {quick} holds no seed run of that plan (cpu 3 epochs)" in err
    assert "its runs were planned with --quick" in err
    assert (quick / "reproduce.md").read_text() == good
    assert main(["reproduce", "--report-only", "--out", str(quick)]) == 0


def test_report_only_on_an_empty_folder_names_reproduce(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--report-only", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no results at {tmp_path}: run `vaebench reproduce --out {tmp_path}` first" in err
    assert "vaebench sweep" not in err


@pytest.mark.slow
def test_reproduce_quick_for_real_on_tiny_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["reproduce", "--quick", "--device", "cpu", "--data", "synthetic", "--samples", "512",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    # The seed, the thread count and the device loader, and one what-if per allocator found here.
    expected = 3 + len(capabilities(probe_torch=False).allocators)
    assert f"{expected} runs on cpu" in text and "measured   cpu (" in text and "published  20-core CPU" in text
    assert "Findings:" in text and "loader=device" in text
    runs = storage.load_runs(out)
    assert len(runs) == expected and (runs["status"] == "ok").all()
    assert (out / "reproduce.md").exists() and (out / "report.md").exists()
