from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaebench.analysis.summary import format_run
from vaebench.protocol import Answer, Request
from vaebench.result import FAILED, OK, DataInfo, RunRecord, StepSplit, TrainMetrics
from vaebench.spec import RunSpec
from vaebench.train import child
from vaebench.train.child import failure_reason
from vaebench.tune.search import Trial


class OutOfMemoryError(RuntimeError):
    """Named like torch's, which the check goes by."""


@pytest.mark.parametrize("exc", [
    OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"),
])
def test_memory_failures_read_as_out_of_memory(exc: BaseException) -> None:
    reason = failure_reason(exc)
    assert reason.startswith("out of memory: ") and "\n" not in reason
    assert Trial(RunSpec(), status=FAILED, reason=reason).out_of_memory, "the tuner's memory boundary"


def test_other_failures_keep_their_type_and_first_line() -> None:
    assert failure_reason(ValueError("bad batch\ndetails")) == "ValueError: bad batch"
    assert failure_reason(RuntimeError("CUDA error: an illegal memory access was encountered")).startswith(
        "RuntimeError: ")


def test_a_loss_that_stops_being_a_number_reads_as_diverged() -> None:
    from vaebench.train.loop import Diverged

    assert failure_reason(Diverged("diverged: epoch 2's mean loss is nan; lower --lr (now 1e+09)")).startswith(
        "diverged: epoch 2's mean loss is nan")
    bce = RuntimeError("all elements of input should be between 0 and 1")
    assert failure_reason(bce).startswith("diverged: the decoder's output went NaN")


def test_a_diverged_run_fails_with_its_reason_and_no_traceback(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "vaebench.cli", "run", "--lr", "1e9", "--samples", "1000", "--epochs",
                           "2", "--data", "synthetic", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VAEBENCH_DATA": str(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    (record,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == FAILED and record["reason"].startswith("diverged: ")
    assert "Traceback" not in proc.stderr and "FAILED    diverged" in proc.stdout


def test_the_import_phase_holds_what_torch_imports_lazily_for_the_model_and_optimizer() -> None:
    # After import_torch, building the model and its Adam imports next to nothing: the ~1 s of
    # torch._dynamo and sympy that Adam's first construction pulls in is not billed to t_model_s.
    probe = (
        "import sys\n"
        "from vaebench.train.child import import_torch\n"
        "import_torch()\n"
        "from vaebench.spec import RunSpec\n"
        "from vaebench.train import loop, model\n"
        "before = set(sys.modules)\n"
        "loop.adam(model.VAE().parameters(), RunSpec())\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_a_digits_picture_that_cannot_be_written_leaves_the_run_ok_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaebench.train import loop

    metrics = TrainMetrics(
        t_import_s=1.0, t_data_s=0.1, t_model_s=0.1, t_first_step_s=0.01, train_s=1.0, steps_done=2,
        samples_seen=256, warmup_steps=1, step_median_ms=5.0, step_iqr_ms=0.1, samples_per_s=1e4, epoch_s=math.nan,
        final_loss=500.0, epoch_losses=[500.0], epoch_times_s=[1.0], split=StepSplit(), model_flops_per_s=1e9,
        peak_flops_per_s=math.nan, flops_frac=math.nan)
    trained = loop.TrainOutcome(metrics=metrics, step_ms=[5.0, 5.0], step_samples=[128, 128], excluded_steps=[],
                                model=None)  # type: ignore[arg-type]

    def full_disk(model: object, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG torn")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(child, "tie_to_parent", lambda: None)  # not this test process's parent
    monkeypatch.setattr(loop, "train", lambda *args, **kwargs: trained)
    monkeypatch.setattr(child, "_save_digits", full_disk)
    request = Request(spec=RunSpec(data="synthetic", samples=256, steps=2), data=DataInfo("synthetic", 256, 1.0, ""),
                      out=str(tmp_path), run_id="r1", result=str(tmp_path / "answer.json"))
    request.write(tmp_path / "request.json")
    assert child.main([str(tmp_path / "request.json")]) == 0
    answer = Answer.read(tmp_path / "answer.json")
    # Was: a failed answer, "OSError: [Errno 28] No space left on device", and every metric dropped.
    assert answer is not None and answer.ok and answer.metrics is not None
    assert answer.metrics.final_loss == 500.0 and answer.step_ms == [5.0, 5.0]
    (warning,) = answer.metrics.warnings
    picture = tmp_path / "samples" / "r1.png"
    assert warning == f"the digits picture could not be written to {picture}: No space left on device"
    assert not picture.exists()
    record = RunRecord(spec=request.spec, run_id="r1", started_at="now", status=OK, train=answer.metrics)
    assert f"  WARNING   {warning}" in format_run(record)
    assert record.to_row()["warnings"] == [warning]
