from __future__ import annotations

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
