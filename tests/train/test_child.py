from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaebench.result import FAILED
from vaebench.spec import RunSpec
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
