from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

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
from vaebench.storage import CorruptResults, append, append_row, done_keys, load_epochs, load_series, read_rows


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


def test_corrupt_line_is_named_and_nothing_is_destroyed(tmp_path: Path) -> None:
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write('{"run_id": "b", "trunc\n')
    append(tmp_path, make_record("c"))
    before = (tmp_path / "runs.jsonl").read_bytes()
    with pytest.raises(CorruptResults, match=r"runs.jsonl:2: ") as info:
        read_rows(tmp_path)
    assert info.value.line_no == 2
    assert (tmp_path / "runs.jsonl").read_bytes() == before


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    append(tmp_path, make_record("a"))
    with open(tmp_path / "runs.jsonl", "a") as handle:
        handle.write('{"run_id": "torn"')  # a crash mid-write, no newline
    append(tmp_path, make_record("b"))
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["run_id"] == "b"


def _writer(folder: str, worker: int, count: int) -> None:
    for i in range(count):
        append_row(folder, {"run_id": f"w{worker}-{i}", "spec_key": "k", "repeat": i, "pad": "x" * 5000})


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


def test_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="vaebench run"):
        read_rows(tmp_path / "nothing")
    assert not os.path.exists(tmp_path / "nothing")
