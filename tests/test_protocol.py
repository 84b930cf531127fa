"""The parent-child protocol: typed records both ways, NaN through JSON's null."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from vaebench.protocol import Answer, Request
from vaebench.result import FAILED, OK, CompileStats, DataInfo, StepSplit, TrainMetrics
from vaebench.spec import RunSpec


def metrics() -> TrainMetrics:
    return TrainMetrics(
        t_import_s=1.0, t_data_s=0.5, t_model_s=0.1, t_first_step_s=0.2, train_s=10.0, steps_done=20,
        samples_seen=2560, warmup_steps=10, step_median_ms=5.0, step_iqr_ms=math.nan, samples_per_s=25600.0,
        epoch_s=5.0, final_loss=120.5, epoch_losses=[150.0, 120.5], epoch_times_s=[5.0, 5.0],
        split=StepSplit(1.0, 0.1, 3.5, 0.4), model_flops_per_s=1e11, peak_flops_per_s=math.nan, flops_frac=math.nan,
        compile=CompileStats(compile_s=2.5, recompiles=1, compile_warnings=["ragged"]),
    )


def test_request_round_trips(tmp_path: Path) -> None:
    request = Request(spec=RunSpec(device="cuda:1", threads=4, sync="epoch"), data=DataInfo("mnist", 60000, 1.0, "/d"),
                      out="/o", run_id="r1", result=str(tmp_path / "answer.json"), progress=True, label="[1/2]")
    request.write(tmp_path / "request.json")
    assert Request.read(tmp_path / "request.json") == request


def test_answer_round_trips_with_nan_as_null(tmp_path: Path) -> None:
    answer = Answer(status=OK, metrics=metrics(), step_ms=[5.0, 5.1], step_samples=[128, 96], excluded_steps=[3],
                    runtime={"blas": "MKL"}, main_cpu_s=3.0)
    answer.write(tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text())["metrics"]["step_iqr_ms"] is None
    back = Answer.read(tmp_path / "a.json")
    assert back is not None and back.ok
    assert back.metrics is not None and math.isnan(back.metrics.step_iqr_ms)
    assert back.metrics.compile == CompileStats(compile_s=2.5, recompiles=1, compile_warnings=["ragged"])
    assert dataclasses.replace(back, metrics=None) == dataclasses.replace(answer, metrics=None)


def test_a_dead_child_has_no_answer_and_a_foreign_one_is_a_failure(tmp_path: Path) -> None:
    assert Answer.read(tmp_path / "missing.json") is None
    (tmp_path / "old.json").write_text(json.dumps({"status": "ok", "metrics": {"samples_per_sec": 1.0}}))
    foreign = Answer.read(tmp_path / "old.json")
    assert foreign is not None and foreign.status == FAILED and "unreadable answer" in foreign.reason
