from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from vaebench import stats, storage
from vaebench.analysis.export import write_report
from vaebench.analysis.report import (
    METRICS,
    Report,
    ReportError,
    _spec_order,
    build_report,
    label_runs,
    summarize,
)
from vaebench.analysis.report_text import _trained, render_markdown, summary_table
from vaebench.cli import main
from vaebench.spec import RunSpec

# Real times per thread count; by hand (type 7 quartiles):
#   threads=1 [10, 11, 12, 13]: median 11.5, Q1 10.75, Q3 12.25, IQR 1.5 (13% of the median)
#   threads=2 [6.0, 6.1, 6.2]:  median 6.1,  Q1 6.05,  Q3 6.15,  IQR 0.1 (1.6%)
#   threads=4 [4.0] and one failed run
REAL_S = {1: [10.0, 12.0, 11.0, 13.0], 2: [6.0, 6.1, 6.2], 4: [4.0]}


def _row(run_id: str, threads: int, repeat: int, real_s: float | None, **extra: Any) -> dict[str, Any]:
    spec = RunSpec(threads=threads, epochs=2)
    row: dict[str, Any] = {
        "schema_version": 1,
        "run_id": run_id,
        "spec_key": spec.key(),
        "repeat": repeat,
        "status": "ok",
        "reason": "",
        **spec.to_dict(),
        "data": "mnist",
        "fp_cpu_model": "Test CPU",
    }
    if real_s is not None:
        row.update(
            real_s=real_s,
            user_s=real_s * threads * 0.9,
            sys_s=0.1 * real_s,
            cpu_pct=90.0 * threads,
            samples_per_s=60_000 / real_s,
            epoch_s=real_s / 2,
            final_loss=110.0,
            epoch_losses=[150.0, 110.0],
            epoch_times_s=[real_s / 2, real_s / 2],
            split_data_ms=0.5,
            split_compute_ms=5.0,
            model_flops_per_s=1e10,
            peak_flops_per_s=1e11,
            flops_frac=0.1,
            peak_rss_mb=800.0,
        )
    row.update(extra)
    return row


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _make_folder(tmp_path)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    """One report written to disk, shared: saving the figures is the slow part."""
    folder = _make_folder(tmp_path_factory.mktemp("written"))
    report = build_report(folder, baseline="threads=1")
    return report, write_report(report)


def _make_folder(tmp_path: Path) -> Path:
    number = 0
    for threads, times in REAL_S.items():
        for repeat, real_s in enumerate(times):
            number += 1
            storage.append_row(tmp_path, _row(f"r{number}", threads, repeat, real_s))
    failed = _row("r9", 4, 1, None, status="failed", reason="killed after the 60 s timeout")
    storage.append_row(tmp_path, failed)
    monitor = [{"t": 0.1 * i, "cpu_util": 50.0} for i in range(5)]
    storage.write_json_atomic(tmp_path / "series" / "r1.json", {"step_ms": [5.0], "monitor": monitor})
    (tmp_path / "samples").mkdir()
    Figure(figsize=(1, 1)).savefig(tmp_path / "samples" / "r5.png")
    return tmp_path


def test_summary_has_hand_computed_medians_and_iqrs(folder: Path) -> None:
    summary = build_report(folder).summary.set_index("config")
    assert list(summary.index) == ["threads=1", "threads=2", "threads=4"]
    assert summary.loc["threads=1", "real_s_median"] == pytest.approx(11.5)
    assert summary.loc["threads=1", "real_s_iqr"] == pytest.approx(1.5)
    assert summary.loc["threads=2", "real_s_median"] == pytest.approx(6.1)
    assert summary.loc["threads=2", "real_s_iqr"] == pytest.approx(0.1)
    assert summary.loc["threads=1", "sys_s_median"] == pytest.approx(1.15)
    assert list(summary["n"]) == [4, 3, 1]
    assert list(summary["failed"]) == [0, 0, 1]
    assert math.isnan(summary.loc["threads=4", "real_s_iqr"])  # one run: its spread is unknown, not 0


def test_a_single_run_shows_no_spread(written: tuple[Report, Path]) -> None:
    report, path = written
    row = next(line for line in path.read_text().splitlines() if line.startswith("| threads=4 |"))
    assert "| 4.00 |" in row and "[" not in row
    assert "| 11.50 [1.50] |" in path.read_text()  # several runs keep theirs
    exported = pd.read_csv(path.parent / "summary.csv").set_index("config")
    assert math.isnan(exported.loc["threads=4", "real_s_iqr"]) and exported.loc["threads=1", "real_s_iqr"] == 1.5


def test_speedup_against_the_chosen_baseline(folder: Path) -> None:
    summary = build_report(folder, baseline="device=cpu,threads=1").summary
    assert list(summary["speedup"]) == pytest.approx([1.0, 11.5 / 6.1, 11.5 / 4.0])
    # samples/s medians: threads=1 of 60,000/[10..13] s, threads=2 60,000/6.1 s, threads=4 60,000/4 s
    slow = statistics.median([60_000 / t for t in REAL_S[1]])
    assert list(summary["steady_speedup"]) == pytest.approx([1.0, 60_000 / 6.1 / slow, 60_000 / 4.0 / slow])
    text = render_markdown(build_report(folder, baseline="device=cpu,threads=1"), folder)
    assert "Speed-up (real s) is the median real time of `device=cpu,threads=1`" in text
    assert "Speed-up (samples/s) is each configuration's steady-state samples/s over the baseline's" in text


def test_a_speedup_its_runs_cannot_show_is_marked_not_significant(folder: Path) -> None:
    report = build_report(folder, baseline="threads=1")
    p = report.summary.set_index("config")["speedup_p"]
    assert math.isnan(p["threads=1"])  # the baseline itself
    assert p["threads=2"] == pytest.approx(1 / math.comb(7, 3))  # 3 runs all faster than the baseline's 4
    assert p["threads=4"] == pytest.approx(1 / 5)  # one run, faster than all 4: chance 1 in 5
    cells = summary_table(report).set_index("config")["speed-up (real s)"]
    assert cells["threads=4"] == f"{11.5 / 4.0:.2f}x (n.s.)"
    assert cells["threads=2"] == f"{11.5 / 6.1:.2f}x" and cells["threads=1"] == "1.00x"
    assert "marked (n.s.) is not significant" in render_markdown(report, folder)


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ("threads=8", "matches no configuration"),
        ("device=cpu", "ambiguous"),
        ("threads=two", "whole number"),
        ("threads", "expected field=value"),
        ("colour=red", "unknown run field"),
    ],
)
def test_a_baseline_that_does_not_pick_one_configuration_is_an_error(folder: Path, baseline: str, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        build_report(folder, baseline=baseline)


def test_warnings_name_high_spread_few_repeats_and_failures(folder: Path) -> None:
    warnings = build_report(folder).warnings
    kinds = {(w.kind, w.config) for w in warnings}
    assert ("high-spread", "threads=1") in kinds
    assert not any(k == "high-spread" and c == "threads=2" for k, c in kinds)
    assert ("few-repeats", "threads=4") in kinds
    assert ("few-repeats", "threads=1") not in kinds
    assert any(w.kind == "failed" and "1 of 9 runs failed" in w.message for w in warnings)
    assert not any(w.kind.startswith("mixed") for w in warnings)


@pytest.mark.parametrize(("single", "expected"), [
    ((8, 16, 32), "every configuration has only 1 successful run; use 3 or more (sweep and ladder take --repeats 3)"),
    ((8, 16), "2 configurations have only 1 successful run (threads=8; threads=16)"),
])
def test_configurations_with_equally_few_runs_share_one_warning(
    tmp_path: Path, single: tuple[int, ...], expected: str
) -> None:
    for threads in single:
        storage.append_row(tmp_path, _row(f"s{threads}", threads, 0, 5.0))
    for repeat in range(3 if len(single) < 3 else 0):
        storage.append_row(tmp_path, _row(f"t{repeat}", 32, repeat, 5.0))
    few = [w.message for w in build_report(tmp_path).warnings if w.kind == "few-repeats"]
    assert len(few) == 1
    assert expected in few[0]


def test_failed_runs_are_listed_with_their_reasons(folder: Path) -> None:
    failed = build_report(folder).failed
    assert list(failed["run_id"]) == ["r9"]
    assert failed.loc[0, "config"] == "threads=4"
    assert failed.loc[0, "reason"] == "killed after the 60 s timeout"


def test_mixed_data_and_machines_come_first(folder: Path) -> None:
    storage.append_row(folder, _row("x1", 2, 3, 6.1, data="synthetic", fp_cpu_model="Other CPU"))
    report = build_report(folder)
    assert [w.kind for w in report.warnings[:2]] == ["mixed-data", "mixed-machine"]
    assert "synthetic (1 run)" in report.warnings[0].message
    assert "data" in report.varying  # so the synthetic run is a configuration of its own
    assert "threads=2,data=synthetic @ Other" in set(report.summary["config"])  # and per machine
    text = render_markdown(report, folder)
    assert "> **Warning: MIXED DATA SOURCES" in text
    quotes = [i for i, line in enumerate(text.splitlines()) if line.startswith("> **Warning")]
    assert len(quotes) == 2 and quotes[1] == quotes[0] + 2  # a blank line between: two paragraphs, not one
    assert text.index("MIXED MACHINES") < text.index("## Machines") < text.index("## Summary")


def test_figures_follow_the_data(folder: Path) -> None:
    figures = build_report(folder).figures
    assert set(figures) == {"times", "thread_scaling", "loss", "step_split", "flops"}


def test_write_report_links_existing_pngs_and_shows_the_table(written: tuple[Report, Path]) -> None:
    _, path = written
    folder, text = path.parent, path.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert "thread_scaling.png" in links
    assert "samples/r5.png" in links
    assert "(r5, on mnist data, final loss 110.00)" in text  # how long it trained, where the record says
    assert all((folder / link).is_file() for link in links)
    assert "| threads=2 | 3 | 0 | 6.10 [0.10] |" in text
    assert "1.89x" in text
    assert "killed after the 60 s timeout" in text


def test_exports_round_trip_through_csv_and_parquet(written: tuple[Report, Path]) -> None:
    report, path = written
    folder = path.parent
    runs = pd.read_parquet(folder / "runs.parquet")
    assert list(runs["epoch_losses"].iloc[0]) == [150.0, 110.0]
    assert runs["epoch_losses"].iloc[-1] is None  # the failed run
    assert list(runs["run_id"]) == list(report.runs["run_id"])
    csv = pd.read_csv(folder / "runs.csv")
    assert json.loads(csv["epoch_times_s"].iloc[0]) == [5.0, 5.0]
    epochs = pd.read_parquet(folder / "epochs.parquet")
    pd.testing.assert_frame_equal(epochs, report.epochs, check_dtype=False)
    assert len(pd.read_csv(folder / "epochs.csv")) == 8 * 2


def test_cli_prints_the_summary_and_writes_the_folder(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(folder), "--baseline", "threads=1", "--runs", "r1"]) == 0
    out = capsys.readouterr().out
    assert "threads=2" in out and "speed-up" in out
    assert "warning: threads=1: real s varies, IQR 1.50 is 13% of the median 11.50" in out
    assert "failed: r9 threads=4: killed after the 60 s timeout" in out
    assert (folder / "report.md").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["report", "{missing}"],
        ["report", "{corrupt}"],
        ["report", "{folder}", "--baseline", "device=cpu"],
        ["report", "{folder}", "--runs", "nope"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    folder: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    corrupt = tmp_path_factory.mktemp("corrupt")
    (corrupt / "runs.jsonl").write_text('{"run_id": "a"}\n{"run_id": \n')
    paths = {"missing": folder / "nowhere", "corrupt": corrupt, "folder": folder}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaebench report: error: ") and err.count("\n") == 1



@pytest.mark.parametrize("target", ["report.md", "runs.csv", "summary.parquet"])
def test_a_folder_the_report_cannot_be_written_into_is_one_line_and_exit_2_after_the_tables(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """A read-only share, or another user's results: played by a folder where a file of the report goes."""
    monkeypatch.setattr("vaebench.analysis.report.draw_figures", lambda *args, **kwargs: {})
    (folder / target).mkdir()
    assert main(["report", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert "threads=2" in out and "failed: r9" in out and "wrote" not in out
    assert err.startswith(f"vaebench report: error: {folder}") and err.count("\n") == 1
    assert "cannot be written" in err and "Is a directory" in err and "not saved" in err


def test_a_folder_from_many_hosts_is_grouped_by_machine(tmp_path: Path) -> None:
    """The same two configurations on an A100 node and an H100 node (two hosts of the latter)."""
    a100 = {"fp_cpu_model": "AMD EPYC 7763 64-Core Processor", "fp_logical_cores": 128, "fp_gpu_name": "A100",
            "fp_hostname": "a1", "fp_torch": "2.5.1"}
    h100 = {"fp_cpu_model": "Intel Xeon Platinum 8480+", "fp_logical_cores": 112, "fp_gpu_name": "H100",
            "fp_torch": "2.5.1"}
    number = 0
    for fingerprint, hosts, scale in ((a100, ["a1"], 1.0), (h100, ["h1", "h2"], 0.5)):
        for threads in (1, 2):
            for repeat, host in enumerate(hosts * 2):
                number += 1
                row = _row(f"r{number}", threads, repeat, 10.0 * scale / threads, **fingerprint)
                storage.write_record(tmp_path, _record_of(row | {"fp_hostname": host}))
    report = build_report(tmp_path, baseline="threads=1")
    names = ("A100, AMD EPYC 7763 x128", "H100, Intel Xeon Platinum 8480+ x112")
    assert set(report.summary["config"]) == {f"threads={t} @ {m}" for t in (1, 2) for m in names}
    machines = report.machines.set_index("machine")
    assert machines.loc["H100, Intel Xeon Platinum 8480+ x112", "hosts"] == "h1, h2"
    assert machines.loc["A100, AMD EPYC 7763 x128", "runs"] == 4
    assert report.summary["speedup"].tolist() == pytest.approx([1.0, 1.0, 2.0, 2.0])  # per machine's own baseline
    text = render_markdown(report, tmp_path)
    assert "## Machines" in text and "### Per machine, side by side" in text
    side = text.split("### Per machine, side by side")[1]
    assert "| threads=1 | 6,000 | 12,000 |" in side


def _record_of(row: dict[str, Any]) -> Any:
    """A row written as a record file, as a cluster job writes it."""
    class Row:
        run_id = row["run_id"]

        @staticmethod
        def to_row() -> dict[str, Any]:
            return row

    return Row()


def test_the_scaling_figure_appears_with_data_parallel_runs(tmp_path: Path) -> None:
    for number, (ranks, rate) in enumerate(((1, 1000.0), (2, 1800.0), (4, 3000.0))):
        spec = RunSpec(threads=1, nproc_per_node=ranks)
        storage.append_row(tmp_path, {**_row(f"w{number}", 1, 0, 5.0), **spec.to_dict(), "spec_key": spec.key(),
                                      "samples_per_s": rate, "world_size": ranks})
    report = build_report(tmp_path)
    assert "rank_scaling" in report.figures
    assert report.summary["world_size"].tolist() == [1, 2, 4]
    # The table's efficiency is the figure's, though the runs were recorded without a baseline.
    assert report.summary["scaling_efficiency_median"].tolist()[1:] == pytest.approx([0.9, 0.75])
    text = render_markdown(report, tmp_path)
    assert "--batch-size is each rank's" in text
    assert "`nproc_per_node=2`: 256; `nproc_per_node=4`: 512" in text
    assert "each rank's" not in render_markdown(build_report(_make_folder(tmp_path / "one")), tmp_path)


def test_report_names_the_kernel_time_cause_of_each_cpu_configuration(tmp_path: Path) -> None:
    from tests.analysis.test_kernel import MIXED_RUN, OVERSUBSCRIBED_RUN, WAKEUPS_RUN

    counters = ("steps_done", "train_user_s", "train_sys_s", "train_minor_faults", "train_ctx_voluntary",
                "train_ctx_involuntary", "runqueue_wait_s", "main_cpu_s", "fp_torch_threads", "fp_usable_cores")
    for number, (recorded, policy) in enumerate(((WAKEUPS_RUN, "passive"), (OVERSUBSCRIBED_RUN, "passive"),
                                                 (MIXED_RUN, "active"), (WAKEUPS_RUN, "active"))):
        threads = int(recorded["threads"])
        spec = RunSpec(threads=threads, epochs=2, omp_wait_policy=policy)
        row = _row(f"k{number}", threads, 0, 10.0, **{k: recorded[k] for k in counters})
        row.update(spec.to_dict(), spec_key=spec.key(), data="mnist")
        storage.append_row(tmp_path, row)
    report = build_report(tmp_path)
    causes = {config: verdict.label for config, verdict in report.kernel.items()}
    assert causes == {
        "threads=2,omp_wait_policy=active": "OpenMP wake-ups",
        "threads=2,omp_wait_policy=passive": "OpenMP wake-ups",
        "threads=8,omp_wait_policy=active": "oversubscription (+ allocator page faults)",
        "threads=16,omp_wait_policy=passive": "oversubscription",
    }
    assert "kernel_time" in report.figures
    markdown = render_markdown(report, tmp_path)
    assert "## Where the kernel (sys) time went" in markdown
    assert "| threads=16,omp_wait_policy=passive | 0.271 | 26 | 1,620 | 105 | 110.7 |" in markdown
    assert re.search(r"\| threads=16,omp_wait_policy=passive \|.*\| oversubscription \| 99% \|", markdown)
    assert "| cause | its share of sys |" in markdown
    assert "- **threads=16,omp_wait_policy=passive**: oversubscription: sys/user 0.27" in markdown
    assert "Kernel time and its counters per step against threads" in markdown
    assert "sandboxed kernel" not in markdown
    storage.append_row(tmp_path, {**row, "run_id": "k9", "fp_sandbox": "gVisor"})
    sandboxed = render_markdown(build_report(tmp_path), tmp_path)
    assert "sandboxed kernel (gVisor): their sys time and context switches are the sandbox's own" in sandboxed


def test_a_gpu_or_counterless_folder_has_no_kernel_section(folder: Path) -> None:
    report = build_report(folder)
    assert report.kernel == {} and "kernel_time" not in report.figures
    assert "kernel (sys) time" not in render_markdown(report, folder)


def test_runs_beside_a_busy_neighbour_are_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for number, busy in enumerate((2.0, 85.0, 140.0)):
        storage.append_row(tmp_path, _row(f"n{number}", 2, number, 6.0, neighbour_cpu_pct=busy))
    report = build_report(tmp_path)
    flagged = [w for w in report.warnings if w.kind == "contended"]
    assert len(flagged) == 1 and "2 of 3 runs" in flagged[0].message and "140% of a core" in flagged[0].message
    assert main(["report", str(tmp_path)]) == 0
    assert "ran beside a busy neighbour" in capsys.readouterr().out
    assert summary_table(report)["busy neighbour"].tolist() == ["2 of 3"]
    for number, busy in enumerate((90.0, 3.0)):
        storage.append_row(tmp_path, _row(f"m{number}", 4, number, 4.0, neighbour_cpu_pct=busy))
    report = build_report(tmp_path)
    (flagged,) = [w.message for w in report.warnings if w.kind == "contended"]
    assert flagged.startswith("3 of 5 runs, in 2 configurations, ran beside a busy neighbour")
    assert flagged.endswith(": threads=2 (2 of 3); threads=4 (1 of 2)")
    assert summary_table(report)["busy neighbour"].tolist() == ["2 of 3", "1 of 2"]



def test_a_folder_measured_beside_a_busy_neighbour_throughout_says_every_run(tmp_path: Path) -> None:
    for number, threads in enumerate((1, 1, 2, 2)):
        storage.append_row(tmp_path, _row(f"b{number}", threads, number, 6.0, neighbour_cpu_pct=150.0))
    (flagged,) = [w.message for w in build_report(tmp_path).warnings if w.kind == "contended"]
    assert flagged.startswith("every run ran beside a busy neighbour (processes outside them used up to 150%")


def test_a_samples_caption_says_how_long_the_run_trained() -> None:
    runs = pd.DataFrame([{"run_id": "a", "steps_done": 8, "data_source": "synthetic", "final_loss": 547.36},
                         {"run_id": "b", "steps_done": float("nan"), "data": "", "final_loss": float("nan")}]
                        ).set_index("run_id")
    assert _trained(runs, "a") == ", after 8 steps on synthetic data, final loss 547.36"
    assert _trained(runs, "b") == "" and _trained(runs, "zz") == ""
    one = pd.DataFrame([{"run_id": "c", "steps_done": 1, "data": "synthetic"}]).set_index("run_id")
    assert _trained(one, "c") == ", after 1 step on synthetic data"


def test_runs_of_one_configuration_on_different_data_files_are_flagged(folder: Path) -> None:
    storage.append_row(folder, _row("d1", 4, 2, 4.1, data_digest="aaaaaaaaaaaa", data_path="/data/one"))
    storage.append_row(folder, _row("d2", 4, 3, 4.2, data_digest="bbbbbbbbbbbb", data_path="/data/two"))
    report = build_report(folder)
    (pooled,) = [w for w in report.warnings if "pooled runs on different data files" in w.message]
    assert pooled.kind == "mixed-data" and "aaaaaaaaaaaa from /data/one (1 run)" in pooled.message
    assert "threads=4" in pooled.message
    digests = report.summary.set_index("config")["data_digest"]
    assert digests["threads=4"] == "aaaaaaaaaaaa, bbbbbbbbbbbb" and pd.isna(digests["threads=1"])  # no digest kept


def test_a_configuration_traced_with_syscalls_has_its_table_and_what_futex_seconds_are(folder: Path) -> None:
    assert "System calls" not in render_markdown(build_report(folder), folder)
    calls = [{"syscall": "futex", "calls": 55_799, "errors": 16_158, "seconds": 11.869587},
             {"syscall": "newfstatat", "calls": 36_385, "errors": 1_255, "seconds": 0.111543}]
    storage.append_row(folder, _row("s1", 4, 2, 4.0, syscall_tool="strace -c -f", syscall_steps=60,
                                    syscall_real_s=14.12, syscalls=calls))
    markdown = render_markdown(build_report(folder), folder)
    section = markdown[markdown.index("## System calls"):markdown.index("## Figures")]
    assert "futex's include the time threads slept in it" in section
    head = "**threads=4**: strace -c -f, 60 steps in 14.1 s; 92,184 calls, 11.98 s in all (the timed runs' sys: 0.40 s)"
    assert head in section
    assert "| futex | 55,799 | 16,158 | 11.870 |" in section
    assert "threads=1" not in section  # no traced run


def test_one_run_in_one_configuration_reads_in_the_singular(tmp_path: Path) -> None:
    storage.append_row(tmp_path, _row("o1", 2, 0, 6.0))
    text = render_markdown(build_report(tmp_path), tmp_path)
    assert "1 run (1 ok, 0 failed) in 1 configuration; they differ in: nothing" in text


def test_a_loss_figure_marks_the_epochs_cut_short_by_steps_and_only_those(folder: Path) -> None:
    assert build_report(folder).figures["loss"].axes[0].get_title() == "Loss per epoch"
    spec = RunSpec(threads=2, epochs=10, steps=60)  # 60 of the 4,690 steps ten epochs would take
    row = _row("p1", 2, 9, 6.0, steps_done=60, epoch_losses=[262.1], epoch_times_s=[1.55])
    storage.append_row(folder, {**row, **spec.to_dict(), "spec_key": spec.key()})
    # A --steps past what the epochs hold stops at their end: no epoch is partial.
    whole = RunSpec(threads=2, epochs=1, steps=10_000)
    storage.append_row(folder, {**_row("p2", 2, 0, 6.0, steps_done=469), **whole.to_dict(), "spec_key": whole.key()})
    report = build_report(folder)
    epoch_ax = report.figures["loss"].axes[0]
    assert epoch_ax.get_title() == "Loss per epoch (open circle: an epoch cut short by --steps)"
    circles = [line for line in epoch_ax.get_lines() if line.get_marker() == "o"]
    assert len(circles) == 1 and list(circles[0].get_ydata()) == [262.1]
    cut = report.epochs.set_index(["run_id", "epoch"])["partial"]
    assert cut[("p1", 1)] and not cut[("p2", 2)] and cut.sum() == 1


def test_a_series_folder_that_is_a_file_leaves_the_runs_out_of_the_timeline_with_a_warning(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    shutil.rmtree(folder / "series")
    (folder / "series").write_text("")
    report = build_report(folder)
    unread = [w.message for w in report.warnings if w.kind == "no-series"]
    assert unread and "series/r1.json: cannot be read (Not a directory)" in unread[0]


def _configurations(tmp_path: Path, specs: list[RunSpec]) -> list[str]:
    for number, spec in enumerate(specs):
        storage.append_row(tmp_path, {**_row(f"p{number}", 1, 0, 5.0), **spec.to_dict(), "spec_key": spec.key()})
    return build_report(tmp_path).summary["config"].tolist()


def test_results_pooled_from_several_experiments_are_named_off_their_most_common_setting(tmp_path: Path) -> None:
    seed = RunSpec(device="cuda", threads=1, epochs=2)
    pooled = [
        seed,
        RunSpec(device="cuda", threads=1, epochs=2, loader="device"),
        RunSpec(device="cuda", threads=1, epochs=2, loader="device", sync="epoch", cuda_graphs=True),
        RunSpec(device="cuda", threads=1, epochs=2, loader="device", steps=60, profile=True),
        RunSpec(device="cpu", threads=1, epochs=2, loader="device"),
    ]
    names = _configurations(tmp_path, pooled)
    assert len(set(names)) == len(pooled)
    assert "device=cuda,loader=reference" in names and "device=cuda" in names  # loader=device is the common one
    assert "device=cuda,sync=epoch,cuda_graphs=on" in names and "device=cpu" in names
    text = render_markdown(build_report(tmp_path), tmp_path)
    assert ("named by its device and what it sets off the most common setting: device=cuda, steps=default, "
            "loader=device,") in text


def test_a_pool_on_one_device_names_its_common_setting_as_such(tmp_path: Path) -> None:
    seed = RunSpec(threads=1, epochs=2)
    pooled = [seed, RunSpec(threads=2, epochs=2), RunSpec(threads=1, epochs=2, batch_size=256),
              RunSpec(threads=1, epochs=2, loader="device"), RunSpec(threads=1, epochs=2, compile="default")]
    names = _configurations(tmp_path, pooled)
    assert names.count("common setting") == 1 and "threads=2" in names and "batch_size=256" in names
    assert not any("device=" in name for name in names)  # one device: naming it says nothing
    text = render_markdown(build_report(tmp_path), tmp_path)
    assert "named by what it sets off the most common setting (itself named `common setting`): threads=1," in text


def test_a_grid_keeps_every_varying_field_in_its_names(tmp_path: Path) -> None:
    grid = [RunSpec(threads=t, batch_size=b, loader=loader, pin_memory=pin, epochs=2)
            for t in (1, 2) for b in (64, 128) for loader in ("tensor", "device") for pin in (False, True)]
    grid = grid[:-3]  # a few points missing (refused, or an interrupted sweep): still a grid
    names = _configurations(tmp_path, grid)
    assert "threads=1,batch_size=128,loader=device,pin_memory=off" in names
    assert all(name.count("=") == 4 for name in names)


def test_the_gpu_timeline_starts_each_run_at_its_training_start(tmp_path: Path) -> None:
    for number, start in enumerate((1000.0, 2000.0)):
        row = _row(f"g{number}", number + 1, 0, 6.0, gpu_util_mean=40.0, train_start_unix=start + 2.0)
        storage.append_row(tmp_path, row)
        monitor = [{"t": t, "gpu_util": 50.0} for t in (0.5, 1.5, 2.5)]
        storage.write_json_atomic(tmp_path / "series" / f"g{number}.json",
                                  {"step_ms": [5.0], "monitor": monitor, "monitor_t0_unix": start})
    figure = build_report(tmp_path).figures["gpu_timeline"]
    lines = figure.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines[:2]] == [[-1.5, -0.5, 0.5]] * 2  # 2 s of start-up each
    assert "time since training started" in figure.axes[-1].get_xlabel()


def test_a_configuration_has_one_colour_in_the_loss_figure_and_the_gpu_timeline(tmp_path: Path) -> None:
    # The CPU run's configuration comes first: the loss figure draws it, the timeline (GPU runs) does not.
    storage.append_row(tmp_path, _row("c0", 1, 0, 6.0))
    for number, threads in enumerate((2, 4)):
        storage.append_row(tmp_path, _row(f"g{number}", threads, 0, 6.0, gpu_util_mean=40.0))
        monitor = [{"t": t, "gpu_util": 50.0} for t in (0.5, 1.5)]
        storage.write_json_atomic(tmp_path / "series" / f"g{number}.json", {"step_ms": [5.0], "monitor": monitor})
    figures = build_report(tmp_path).figures

    def colours(figure: Figure) -> dict[str, tuple[float, ...]]:
        legend = figure.legends[0]
        return {text.get_text().split(" (")[0]: to_rgba(line.get_color())
                for text, line in zip(legend.get_texts(), legend.get_lines(), strict=True)}

    loss, timeline = colours(figures["loss"]), colours(figures["gpu_timeline"])
    assert list(timeline) == ["threads=2", "threads=4"] and len(set(loss.values())) == 3
    assert timeline == {config: loss[config] for config in timeline}


def test_past_the_cap_the_terminal_counts_the_verdicts_by_cause_and_names_the_worst() -> None:
    from vaebench.analysis.kernel import ALLOCATOR, WAKEUPS, Verdict
    from vaebench.analysis.report_text import bottleneck_lines, kernel_lines
    from vaebench.analysis.shown import MAX_SHOWN

    configs = [f"threads={i}" for i in range(100)]
    kernel = {c: Verdict(WAKEUPS if i % 4 else ALLOCATOR, {}, ("evidence",), numbers={"sys_ms_per_step": float(i)})
              for i, c in enumerate(configs)}
    bounds = {c: f"bound by {'compute' if i % 2 else 'input pipeline'}: the evidence" for i, c in enumerate(configs)}
    report = Report(folder=Path("."), runs=pd.DataFrame(), epochs=pd.DataFrame(), summary=pd.DataFrame(),
                    varying=("threads",), kernel=kernel, bottlenecks=bounds)
    lines = kernel_lines(report)
    assert lines[1] == f"  {WAKEUPS}: 75 configurations; most sys per step: threads=99 (99.00 ms); " \
                       "threads=98 (98.00 ms); threads=97 (97.00 ms)"
    assert lines[2].startswith(f"  {ALLOCATOR}: 25 configurations; most sys per step: threads=96 (96.00 ms)")
    assert len(lines) == 3 and "report.md" in lines[0]
    assert bottleneck_lines(report)[1:] == [
        "  bound by input pipeline: 50 configurations, e.g. threads=0; threads=2; threads=4",
        "  bound by compute: 50 configurations, e.g. threads=1; threads=3; threads=5"]
    few = Report(folder=Path("."), runs=pd.DataFrame(), epochs=pd.DataFrame(), summary=pd.DataFrame(),
                 varying=("threads",), bottlenecks=dict(list(bounds.items())[:MAX_SHOWN]))
    assert bottleneck_lines(few)[0] == "threads=0: bound by input pipeline: the evidence"


def test_past_the_cap_the_terminal_counts_the_warnings_by_kind() -> None:
    from vaebench.analysis.report import ReportWarning
    from vaebench.analysis.report_text import warning_lines
    from vaebench.analysis.shown import MAX_SHOWN

    configs = [f"threads={i}" for i in range(40)]
    warnings = [ReportWarning("mixed-data", "the runs read different data"),
                *(ReportWarning("high-spread", f"{c}: real s varies", c) for c in configs),
                *(ReportWarning("high-spread", f"{c}: samples/s varies", c) for c in configs[:2]),
                ReportWarning("few-repeats", f"{configs[5]}: 1 run", configs[5])]

    def report(found: list[ReportWarning]) -> Report:
        return Report(folder=Path("."), runs=pd.DataFrame(), epochs=pd.DataFrame(), summary=pd.DataFrame(),
                      varying=("threads",), warnings=found)

    assert warning_lines(report(warnings)) == [
        "warning: the runs read different data",
        "warning: high-spread: 40 configurations, e.g. threads=0; threads=1; threads=2 (each in report.md)",
        "warning: few-repeats: 1 configuration, e.g. threads=5 (each in report.md)"]
    few = warnings[:MAX_SHOWN]
    assert warning_lines(report(few)) == [f"warning: {w.message}" for w in few]  # a line each, in their order


def summarize_per_configuration(runs: pd.DataFrame) -> pd.DataFrame:
    """summarize as it read before it split the columns once: every configuration masked out of
    the whole table and each of its metrics converted on its own."""
    ok = runs[runs["status"] == "ok"]
    rows = []
    for config, group in runs.groupby("config", sort=False):
        spec = RunSpec.from_dict(group.iloc[0].to_dict())
        good = ok[ok["config"] == config]
        row: dict[str, Any] = {"config": config, "n": len(good), "failed": len(group) - len(good)}
        for name in METRICS:
            values = pd.to_numeric(good[name], errors="coerce").dropna().tolist()
            row[f"{name}_median"] = stats.median(values) if values else math.nan
            row[f"{name}_iqr"] = stats.iqr(values) if len(values) > 1 else math.nan
        row.update(spec.to_dict())
        row.update(world_size=spec.world_size, global_batch=spec.global_batch)
        row["spec_key"] = group["spec_key"].iloc[0]
        row["setup"] = group["setup"].iloc[0]
        row["machine"] = group["machine"].iloc[0]
        for column in ("data_source", "data_digest"):
            found = good[column].dropna().astype(str).unique() if column in good else []
            row[column] = ", ".join(found) if len(found) else None
        sources = good.get("profile_busy_source", pd.Series(dtype=str)).dropna().astype(str)
        row["profile_busy_source"] = sources.mode().iloc[0] if len(sources) else ""
        rows.append((spec, row))
    rows.sort(key=lambda pair: (_spec_order(pair[0]), pair[1]["machine"]))
    return pd.DataFrame([row for _, row in rows])


@st.composite
def run_tables(draw: st.DrawFn) -> pd.DataFrame:
    """Small tables of runs over a few configurations and machines: failed runs, missing and
    tied values, several data sources, a metric no run took and one read back as text."""
    rows = []
    for number in range(draw(st.integers(1, 16))):
        threads = draw(st.sampled_from([None, 1, 2]))
        row = _row(f"r{number}", 1, draw(st.integers(0, 2)), draw(st.sampled_from([None, 4.0, 5.0, 6.0, 6.0])))
        spec = RunSpec(threads=threads, batch_size=draw(st.sampled_from([64, 128])), epochs=2)
        row.update(spec.to_dict(), spec_key=spec.key(), data="mnist")
        row["status"] = draw(st.sampled_from(["ok", "ok", "ok", "failed"]))
        row["fp_cpu_model"] = draw(st.sampled_from(["Test CPU", "Other CPU"]))
        row["data_source"] = draw(st.sampled_from([None, "cache", "download"]))
        row["profile_busy_source"] = draw(st.sampled_from([None, "cupti", "kineto", "kineto"]))
        row["gpu_util_mean"] = None  # a metric no run took: a column of None
        row["allreduce_ms"] = draw(st.sampled_from([None, "n/a", 1.5, 2]))  # text among numbers
        rows.append(row)
    return label_runs(pd.DataFrame(rows))[0]


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(runs=run_tables())
def test_summarize_is_the_per_configuration_summary(runs: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(summarize(runs), summarize_per_configuration(runs), check_exact=True)
