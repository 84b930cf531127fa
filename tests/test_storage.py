from __future__ import annotations

import dataclasses
import errno
import json
import math
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.queues import Queue
from pathlib import Path

import pandas as pd
import pytest

from vaebench import load_runs
from vaebench.result import (
    RUN_COLUMNS,
    DataInfo,
    MonitorSummary,
    ProcessUsage,
    RunRecord,
    RunSeries,
    StepSplit,
    TrainMetrics,
)
from vaebench.spec import RunSpec
from vaebench.storage import (
    RECORDS_DIR,
    CorruptResults,
    NoResults,
    NotSaved,
    append,
    append_row,
    claim,
    done_keys,
    has_results,
    load_epochs,
    load_monitor,
    load_series,
    read_rows,
    write_record,
)


def make_record(run_id: str = "r1", repeat: int = 0, **spec: object) -> RunRecord:
    train = TrainMetrics(
        t_import_s=1.0, t_data_s=0.5, t_model_s=0.1, t_first_step_s=0.2, train_s=10.0, steps_done=20,
        samples_seen=2560, warmup_steps=10, step_median_ms=5.0, step_iqr_ms=0.5, samples_per_s=25600.0,
        epoch_s=5.0, final_loss=120.5, epoch_losses=[150.0, 120.5], epoch_times_s=[5.0, 5.0],
        split=StepSplit(1.0, 0.1, 3.5, 0.4), model_flops_per_s=1e11, peak_flops_per_s=2e11, flops_frac=0.5,
    )
    return RunRecord(
        spec=RunSpec(**spec),  # type: ignore[arg-type]
        run_id=run_id,
        started_at="2026-01-01T00:00:00+00:00",
        repeat=repeat,
        data=DataInfo("embedded-5k", 60000, 12.0, "/tmp/x"),
        process=ProcessUsage(12.0, 20.0, 4.0, 800.0, 100, 50, 0),
        train=train,
        monitor=MonitorSummary(monitor_samples=3, cpu_util_mean=90.0),
        fingerprint={"cpu_model": "Test CPU", "torch": "2.14.1"},
    )


def test_record_round_trips_through_pandas(tmp_path: Path) -> None:
    append(tmp_path, make_record(), RunSeries(step_ms=[5.0, 6.0], monitor=[{"t": 0.1, "cpu_util": 50.0}]))
    frame = load_runs(str(tmp_path))
    required = ["device", "threads", "batch_size", "loader", "workers", "compile", "amp", "data", "epochs",
                "real_s", "user_s", "sys_s", "cpu_pct", "samples_per_s", "final_loss", "gpu_util_mean",
                "peak_rss_mb", "status"]
    assert set(required) <= set(frame.columns)
    assert set(frame.columns) - set(RUN_COLUMNS) == {"fp_cpu_model", "fp_torch"}
    row = frame.iloc[0]
    assert row["cpu_pct"] == pytest.approx(200.0)  # (20 + 4) / 12
    assert row["data_source"] == "embedded-5k" and row["data_repeat"] == 12.0
    assert row["epoch_losses"] == [150.0, 120.5]
    assert row["spec_key"] == RunSpec().key()
    assert RunSpec.from_dict(row.to_dict()) == RunSpec()
    assert load_series(tmp_path, "r1").step_ms == [5.0, 6.0]
    epochs = load_epochs(tmp_path)
    assert epochs["elapsed_s"].tolist() == [5.0, 10.0]


def test_a_measurement_no_run_took_is_a_float_column_of_nan(tmp_path: Path) -> None:
    append(tmp_path, make_record(run_id="r1"), RunSeries())
    append(tmp_path, make_record(run_id="r2"), RunSeries())
    frame = load_runs(str(tmp_path))
    assert frame["gpu_util_mean"].dtype == float and frame["gpu_util_mean"].isna().all()  # null in every record
    assert frame["gpu_util_mean"].round(1).isna().all()
    assert frame["single_rank_samples_per_s"].isna().all()  # documented, held by no record here: NaN, not a KeyError


def test_monitor_samples_carry_unix_time_where_the_series_knows_the_monitor_start(tmp_path: Path) -> None:
    monitor = [{"t": 0.5, "cpu_util": 50.0}, {"t": 1.0, "cpu_util": 60.0}]
    append(tmp_path, make_record(run_id="r1"), RunSeries(monitor=monitor, monitor_t0_unix=1000.0))
    assert load_monitor(tmp_path, "r1")["t_unix"].tolist() == [1000.5, 1001.0]
    append(tmp_path, make_record(run_id="r2"), RunSeries(monitor=monitor))  # as series from before it was kept
    assert "t_unix" not in load_monitor(tmp_path, "r2")


def test_corrupt_line_is_named_and_nothing_is_destroyed(tmp_path: Path) -> None:
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write('{"run_id": "b", trunc}\n')  # not a record cut short (those are skipped): damaged
    append(tmp_path, make_record("c"))
    before = (tmp_path / "runs.jsonl").read_bytes()
    with pytest.raises(CorruptResults, match=r"runs.jsonl:2: ") as info:
        read_rows(tmp_path)
    assert info.value.line_no == 2
    assert (tmp_path / "runs.jsonl").read_bytes() == before


def test_a_blank_line_between_records_is_passed_over(tmp_path: Path) -> None:
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write("\n  \n")  # an editor's or a concatenation's empty lines
    append(tmp_path, make_record("b"))
    assert [row["run_id"] for row in read_rows(tmp_path)] == ["a", "b"]


@pytest.mark.parametrize("line", ["[1, 2", '"abc', "  [1, 2"])
def test_a_line_cut_short_that_never_opened_a_record_is_corrupt_not_skipped(tmp_path: Path, line: str) -> None:
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write(line + "\n")  # valid JSON up to its end, but not the start of a record
    append(tmp_path, make_record("b"))
    with pytest.raises(CorruptResults, match=r"runs.jsonl:2: not a valid record \(not JSON: "):
        read_rows(tmp_path)


def test_another_tools_file_is_named_as_possibly_not_ours(tmp_path: Path) -> None:
    (tmp_path / "runs.jsonl").write_text('{"benchmark": "other tool", "time": 1.5}\n')
    with pytest.raises(CorruptResults, match=r"runs.jsonl:1: ") as info:
        read_rows(tmp_path)
    assert "if it is not vaebench's, give another results folder" in str(info.value)


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write('{"run_id": "torn"')  # a crash mid-write, no newline
    append(tmp_path, make_record("b"))
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["run_id"] == "b"


def test_a_record_cut_short_by_a_crash_is_skipped_with_a_warning_and_its_point_runs_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append(tmp_path, make_record("a"))
    whole = json.dumps(make_record("torn", repeat=1).to_row())
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write(whole[: len(whole) // 2])  # a crash mid-write, no newline: the file's last line
    assert [row["run_id"] for row in read_rows(tmp_path)] == ["a"]
    assert "runs.jsonl:2: a record cut short" in capsys.readouterr().err
    append(tmp_path, make_record("b", repeat=2))  # the writer steps past it: now it sits mid-file
    assert [row["run_id"] for row in read_rows(tmp_path)] == ["a", "b"]
    assert (RunSpec().key(), 1) not in done_keys(tmp_path)


def test_a_record_cut_short_at_any_byte_is_skipped_at_the_end_and_where_a_writer_stepped_past_it(
    tmp_path: Path,
) -> None:
    """Every way a write can stop: inside a string or an escape, a number, null, true or false."""
    def written(row: dict[str, object]) -> bytes:
        append_row(tmp_path / str(row["run_id"]), row)
        return (tmp_path / str(row["run_id"]) / "runs.jsonl").read_bytes()

    head, tail = (written(make_record(run_id).to_row()) for run_id in ("a", "b"))
    torn = {**make_record("torn").to_row(), "reason": 'killed: "\u00e9" \\ \n', "flops_frac": 1.5e-07}
    line = written(torn).rstrip(b"\n")
    assert all(token in line for token in (b"null", b"true", b"false", b"\\u00e9", b"\\\\", b".", b"e-07"))
    for cut in range(1, len(line)):
        folder = tmp_path / f"cut{cut}"  # a new file each: rewriting one is slow on ext4
        folder.mkdir()
        (folder / "runs.jsonl").write_bytes(head + line[:cut])
        assert [row["run_id"] for row in read_rows(folder)] == ["a"], line[:cut]
    stepped_past = b"".join(line[:cut] + b"\n" for cut in range(1, len(line)))  # as append_row leaves each
    (tmp_path / "runs.jsonl").write_bytes(head + stepped_past + tail)
    assert [row["run_id"] for row in read_rows(tmp_path)] == ["a", "b"]


def test_a_record_cut_short_just_after_a_numbers_minus_sign_is_skipped(tmp_path: Path) -> None:
    append_row(tmp_path / "whole", {**make_record("torn").to_row(), "x": -1.5})
    line = (tmp_path / "whole" / "runs.jsonl").read_bytes()
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "ab") as handle:
        handle.write(line[: line.index(b"-1.5") + 1])  # the write stopped after the sign
    assert [row["run_id"] for row in read_rows(tmp_path)] == ["a"]


def _writer(folder: str, worker: int, count: int) -> None:
    row = make_record().to_row()
    for i in range(count):
        append_row(folder, {**row, "run_id": f"w{worker}-{i}", "spec_key": "k", "repeat": i, "pad": "x" * 5000})


def test_two_concurrent_writers_do_not_corrupt_the_file(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 200)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    rows = read_rows(tmp_path)
    assert len(rows) == 400
    assert len({r["run_id"] for r in rows}) == 400
    assert done_keys(tmp_path) == {("k", i) for i in range(200)}


def test_a_claim_excludes_a_second_and_leaves_no_file(tmp_path: Path) -> None:
    with claim(tmp_path, "k", 0) as mine:
        assert mine
        with claim(tmp_path, "k", 0) as second:
            assert not second  # another sweep (another open file) is refused while it is held
        with claim(tmp_path, "k", 1) as other_point:
            assert other_point
    assert list((tmp_path / ".locks").iterdir()) == []  # a 1,000-point sweep leaves no 1,000 files


def test_a_claim_whose_file_its_holder_removed_claims_the_new_one(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real_open, opened = os.open, []

    def open_then_holder_finishes(path: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        if not opened:
            os.unlink(path)  # the previous holder releases between our open and our lock
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", open_then_holder_finishes)
    with claim(tmp_path, "k", 0) as mine:
        assert mine and len(opened) == 2  # the orphaned file is given up for the one at the path
        with claim(tmp_path, "k", 0) as second:
            assert not second  # and that one is really held


def test_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vaebench run"):
        read_rows(tmp_path / "nothing")
    assert not os.path.exists(tmp_path / "nothing")


def test_done_keys_count_only_successful_runs(tmp_path: Path) -> None:
    append(tmp_path, make_record("ok", repeat=0))
    append(tmp_path, dataclasses.replace(make_record("bad", repeat=1), status="failed", reason="preempted"))
    assert done_keys(tmp_path) == {(RunSpec().key(), 0)}  # the failed point runs again on resume


def test_record_files_merge_with_runs_jsonl_each_run_once(tmp_path: Path) -> None:
    assert not has_results(tmp_path)
    append(tmp_path, make_record("20260101T000000-a"))
    write_record(tmp_path, make_record("20260101T000001-b"), RunSeries(step_ms=[1.0]))
    write_record(tmp_path, make_record("20260101T000000-a"))  # the same run seen twice: counted once
    assert has_results(tmp_path)
    assert [r["run_id"] for r in read_rows(tmp_path)] == ["20260101T000000-a", "20260101T000001-b"]
    assert load_series(tmp_path, "20260101T000001-b").step_ms == [1.0]
    assert len(load_runs(str(tmp_path))) == 2
    only_files = tmp_path / "files"
    write_record(only_files, make_record("c"))
    assert [r["run_id"] for r in read_rows(only_files)] == ["c"]  # no runs.jsonl at all


def test_a_run_in_runs_jsonl_and_in_records_is_read_from_runs_jsonl(tmp_path: Path) -> None:
    append(tmp_path, make_record("20260101T000000-a"))
    again = dataclasses.replace(make_record("20260101T000000-a"), started_at="2026-01-02T00:00:00+00:00")
    write_record(tmp_path, again)
    (row,) = read_rows(tmp_path)
    assert row["started_at"] == "2026-01-01T00:00:00+00:00"  # runs.jsonl is read first: its row is the one kept


def test_a_writer_between_write_and_rename_leaves_no_record(tmp_path: Path) -> None:
    write_record(tmp_path, make_record("a"))
    (tmp_path / RECORDS_DIR / ".b.json.x1y2.tmp").write_text('{"run_id": "b", "tru')  # died mid-write
    assert [r["run_id"] for r in read_rows(tmp_path)] == ["a"]


def test_a_corrupt_record_file_is_named(tmp_path: Path) -> None:
    write_record(tmp_path, make_record("a"))
    (tmp_path / RECORDS_DIR / "b.json").write_text("{not json")
    with pytest.raises(CorruptResults, match=r"records/b.json:1: "):
        read_rows(tmp_path)


def test_a_record_file_holding_another_run_is_named(tmp_path: Path) -> None:
    write_record(tmp_path, make_record("a"))
    (tmp_path / RECORDS_DIR / "b.json").write_text(json.dumps(make_record("a").to_row()))  # copied, not renamed
    with pytest.raises(CorruptResults, match=r"records/b.json:1: not a valid record \(run_id 'a' is not the file's "):
        read_rows(tmp_path)


def _file_writer(folder: str, worker: int, count: int) -> None:
    for i in range(count):
        write_record(folder, make_record(f"w{worker}-{i:03d}", repeat=i))


def _reader(folder: str, seconds: float, failures: Queue) -> None:  # type: ignore[type-arg]
    """Reads the folder over and over while it is written: every read whole, never fewer than before."""
    import time

    seen, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            rows = read_rows(folder) if has_results(folder) else []
        except Exception as exc:  # noqa: BLE001 - any failure to read is the test's failure
            failures.put(repr(exc))
            return
        if len(rows) < seen or len({r["run_id"] for r in rows}) != len(rows):
            failures.put(f"{len(rows)} rows after {seen}")
            return
        seen = len(rows)


def test_many_writers_and_a_reader_lose_tear_or_duplicate_nothing(tmp_path: Path) -> None:
    """Hosts of a cluster, played by processes: each writes its records as files while an
    appender uses runs.jsonl and a reader reads throughout."""
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    procs = [ctx.Process(target=_file_writer, args=(str(tmp_path), w, 60)) for w in range(4)]
    procs.append(ctx.Process(target=_writer, args=(str(tmp_path), 9, 60)))
    procs.append(ctx.Process(target=_reader, args=(str(tmp_path), 3.0, failures)))
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert failures.empty(), failures.get()
    rows = read_rows(tmp_path)
    assert len(rows) == 300 and len({r["run_id"] for r in rows}) == 300
    assert not list((tmp_path / RECORDS_DIR).glob("*.tmp"))


def _line(**changes: object) -> str:
    row = make_record("good").to_row()
    row.update(changes)
    return json.dumps({k: v for k, v in row.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ('{"run_id": "x1"}', "missing"),
        (_line(spec_key=None), "spec_key"),
        (_line(repeat="abc"), "repeat"),
        (_line(repeat=-1), "repeat"),
        (_line(batch_size="64"), "batch_size"),
        (_line(real_s="fast"), "real_s"),
        (_line(epoch_losses="high"), "epoch_losses"),
        (_line(status="maybe"), "status"),
        (_line(schema_version=_DROP), "schema_version"),
        (_line(schema_version=99), "newer vaebench"),
        (_line(run_id="../../etc/passwd"), "run_id"),
        (_line(run_id=7), "run_id"),
        ("[1, 2]", "object"),
    ],
)
def test_a_line_that_is_json_but_not_a_record_is_named_and_nothing_changes(
    tmp_path: Path, line: str, detail: str
) -> None:
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write(line + "\n")
    before = (tmp_path / "runs.jsonl").read_bytes()
    with pytest.raises(CorruptResults, match=r"runs.jsonl:2: ") as info:
        read_rows(tmp_path)
    assert detail in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "runs.jsonl").read_bytes() == before


def test_every_column_a_record_writes_passes_its_own_check() -> None:
    from vaebench.result import COLUMN_TYPES, record_problem

    row = make_record().to_row()
    assert record_problem(row) is None
    assert set(RUN_COLUMNS) <= set(COLUMN_TYPES)
    failed = RunRecord(spec=RunSpec(threads=2), run_id="f1", started_at="x", status="failed", reason="crashed")
    assert record_problem(failed.to_row()) is None


def test_the_shipped_example_records_are_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "nvidia-h200"
    assert len(read_rows(example)) >= 5


def test_a_run_id_is_checked_before_it_becomes_a_path(tmp_path: Path) -> None:
    from vaebench.errors import UsageError

    for bad in ("../runs", "a/b", "", ".hidden", "x" * 300):
        with pytest.raises(UsageError, match="run id"):
            load_series(tmp_path, bad)


@pytest.mark.parametrize("payload", ['{"step_ms": "fast"}', '{"step_ms": [1, "x"]}', "[1, 2]", "{torn",
                                     '{"step_ms": [1.0], "monitor": [3]}', '{"step_ms": [1.0], "step_samples": [-1]}',
                                     '{"step_ms": [1.0], "monitor_t0_unix": "x"}'])
def test_a_series_file_that_is_not_one_is_named(tmp_path: Path, payload: str) -> None:
    from vaebench.errors import UsageError

    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "r1.json").write_text(payload)
    with pytest.raises(UsageError, match=r"series/r1.json: "):
        load_series(tmp_path, "r1")


def test_energy_per_epoch_counts_a_step_limited_run_for_the_share_of_an_epoch_it_ran() -> None:
    import dataclasses

    record = make_record(samples=60_000)
    record = dataclasses.replace(record, monitor=dataclasses.replace(record.monitor, gpu_energy_train_j=64.0))
    row = record.to_row()
    assert row["gpu_energy_per_epoch_j"] == pytest.approx(64.0 * 60_000 / 2560)  # 2,560 samples of 60,000
    assert row["gpu_energy_per_sample_mj"] == pytest.approx(1e3 * 64.0 / 2560)


def test_a_results_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    from vaebench.storage import UnreadableResults

    (tmp_path / "runs.jsonl").mkdir()
    with pytest.raises(UnreadableResults, match=r"runs.jsonl: cannot be read \(Is a directory\)"):
        read_rows(tmp_path)
    (tmp_path / "series").write_text("")
    with pytest.raises(UnreadableResults, match=r"series/r1.json: cannot be read \(Not a directory\)"):
        load_series(tmp_path, "r1")


def test_an_older_record_cut_short_by_steps_reads_its_whole_epochs_time_only(tmp_path: Path) -> None:
    row = make_record().to_row()
    del row["last_epoch_partial"]  # written before the flag was kept
    spec = RunSpec(epochs=10, steps=60)  # 60 of the 4,690 steps: the only epoch is partial
    append_row(tmp_path, {**row, **spec.to_dict(), "run_id": "old", "steps_done": 60, "epoch_s": 7.6,
                          "epoch_times_s": [7.6]})
    two = RunSpec(epochs=10, steps=700)  # one whole epoch (469 steps), then a partial one
    append_row(tmp_path, {**row, **two.to_dict(), "run_id": "old2", "steps_done": 700, "epoch_s": 3.0,
                          "epoch_times_s": [4.5, 1.5]})
    append_row(tmp_path, {**make_record("new").to_row(), "epoch_s": 5.0})
    runs = load_runs(str(tmp_path)).set_index("run_id")
    assert pd.isna(runs.loc["old", "epoch_s"]) and runs.loc["old2", "epoch_s"] == 4.5
    assert runs.loc["new", "epoch_s"] == 5.0  # a record with the flag is read as written


def test_a_record_that_says_its_last_epoch_was_partial_keeps_its_epoch_s(tmp_path: Path) -> None:
    # Only a record from before the flag is read by today's rule; one that carries the flag was
    # written by it. Its epoch_s differs here from the rule's (4.5 s, its one whole epoch) to see
    # which is read.
    spec = RunSpec(epochs=10, steps=700)
    append_row(tmp_path, {**make_record().to_row(), **spec.to_dict(), "run_id": "new", "steps_done": 700,
                          "last_epoch_partial": True, "epoch_s": 4.4, "epoch_times_s": [4.5, 1.5]})
    assert load_runs(str(tmp_path)).set_index("run_id").loc["new", "epoch_s"] == 4.4


def test_a_rank_run_recorded_before_its_baseline_gets_its_scaling_efficiency_on_read(tmp_path: Path) -> None:
    """A sweep may run the 2-rank point before the 1-rank one: the record had no baseline then,
    the folder has one now, and the table says what the report's figure draws."""
    host = {"cpu_model": "Test CPU", "torch": "2.14.1", "hostname": "a"}
    two = dataclasses.replace(make_record("r2", nproc_per_node=2), fingerprint=host)
    one = dataclasses.replace(make_record("r1"), fingerprint=host)
    measured = dataclasses.replace(make_record("r3", nproc_per_node=2, batch_size=64), fingerprint=host,
                                   scaling_efficiency=0.9, single_rank_samples_per_s=14000.0)
    for record in (two, one, measured):
        append(tmp_path, record)
    frame = load_runs(str(tmp_path)).set_index("run_id")
    assert frame.loc["r2", "single_rank_samples_per_s"] == 25600.0
    assert frame.loc["r2", "scaling_efficiency"] == pytest.approx(25600.0 / (2 * 25600.0))
    assert frame.loc["r3", "scaling_efficiency"] == 0.9  # recorded with its baseline: kept as measured
    assert math.isnan(frame.loc["r1", "scaling_efficiency"])  # one rank: no efficiency
    assert json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[0])["scaling_efficiency"] is None


def test_every_file_of_a_results_folder_is_readable_by_others_under_the_usual_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        append(tmp_path, make_record("a"), RunSeries(step_ms=[1.0]))
        write_record(tmp_path, make_record("b"), RunSeries(step_ms=[1.0]))
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.relative_to(tmp_path).as_posix() for p in files} == {
        "runs.jsonl", "series/a.json", "series/b.json", "records/b.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}


def _full_disk(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_series_a_full_disk_refuses_is_left_out_and_the_record_is_written_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (_full_disk if Path(dst).parent.name == "series" else replace)(
        src, dst))
    append(tmp_path, make_record("a"), RunSeries(step_ms=[1.0] * 5000))
    write_record(tmp_path, make_record("b"), RunSeries(step_ms=[1.0]))
    assert [row["run_id"] for row in read_rows(tmp_path)] == ["a", "b"]
    assert not list((tmp_path / "series").iterdir())  # no series, nor a temporary file
    err = capsys.readouterr().err
    assert "series/a.json: the run's series could not be written (No space left on device)" in err
    with pytest.raises(FileNotFoundError):
        load_series(tmp_path, "a")


def test_a_record_a_full_disk_refuses_is_one_line_naming_the_file_and_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(tmp_path, make_record("a"))
    before = (tmp_path / "runs.jsonl").read_bytes()
    monkeypatch.setattr(os, "write", _full_disk)
    with pytest.raises(NotSaved, match=r"runs.jsonl: the run's record could not be written \(No space left on device"):
        append(tmp_path, make_record("b"))
    assert (tmp_path / "runs.jsonl").read_bytes() == before
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(NotSaved, match=r"records/c.json: the run's record could not be written \(No space left"):
        write_record(tmp_path, make_record("c"))
    assert not (tmp_path / RECORDS_DIR / "c.json").exists() and not list((tmp_path / RECORDS_DIR).iterdir())


def test_a_first_record_a_full_disk_refuses_leaves_a_folder_with_no_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = os.write
    monkeypatch.setattr(os, "write", _full_disk)
    with pytest.raises(NotSaved, match="No space left on device"):
        append(tmp_path, make_record("a"))
    assert not has_results(tmp_path) and done_keys(tmp_path) == set()
    with pytest.raises(NoResults, match="vaebench run"):
        read_rows(tmp_path)
    monkeypatch.setattr(os, "write", write)
    append(tmp_path, make_record("b"))
    assert has_results(tmp_path) and [row["run_id"] for row in read_rows(tmp_path)] == ["b"]



def _disk_with_room(room: int) -> Callable[[int, bytes], int]:
    """os.write on a disk with `room` bytes free: a write takes what fits, and once none does, ENOSPC."""
    write = os.write

    def fake(fd: int, data: bytes) -> int:
        nonlocal room
        if not room:
            _full_disk()
        taken = write(fd, data[:room])
        room -= taken
        return taken

    return fake


def test_a_record_is_written_whole_through_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: write(fd, data[:1000]))
    append(tmp_path, make_record("a"))
    append(tmp_path, make_record("b"))
    assert [row["run_id"] for row in read_rows(tmp_path)] == ["a", "b"]


@pytest.mark.parametrize("refused", ["write", "fsync"])
def test_a_record_the_disk_takes_only_part_of_is_undone_not_left_torn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    append(tmp_path, make_record("a"))
    before = (tmp_path / "runs.jsonl").read_bytes()
    if refused == "write":
        monkeypatch.setattr(os, "write", _disk_with_room(len(before) // 2))  # room for half a line
    else:
        monkeypatch.setattr(os, "fsync", _full_disk)  # a filesystem that allocates at the flush
    with pytest.raises(NotSaved, match="No space left on device"):
        append(tmp_path, make_record("b"))
    assert (tmp_path / "runs.jsonl").read_bytes() == before
