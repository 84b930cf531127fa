"""The training child: `python -m vaebench.train.child REQUEST.json`.

Started fresh for every measured run so thread settings, compile caches and the CUDA
context never leak between runs. The parent has already put the thread variables in the
environment; torch is imported only after the clock starts, so `t_import_s` is real.
It writes its answer to the request's `result` path, atomically, and exits 0 (trained),
1 (failed, reason in the answer) or dies (the parent reports how).

Under torchrun (`--nproc-per-node N`) every rank runs this module: rank 0 answers for the run,
with every rank's step times; a rank that fails writes its reason beside the answer as
`rank<r>.json`, so the parent can name the rank that took the run down.
"""

from __future__ import annotations

import time

_START = time.perf_counter()

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

from .._format import ProgressBar  # noqa: E402
from ..protocol import Answer, Request  # noqa: E402
from ..result import OK, TrainMetrics  # noqa: E402
from ..storage import SAMPLES_DIR  # noqa: E402
from .lifeline import exit_if_orphaned, tie_to_parent  # noqa: E402


def main(argv: list[str]) -> int:
    tie_to_parent()
    request = Request.read(Path(argv[0]))
    rank = int(os.environ.get("RANK", 0))
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    try:
        answer = _train(request, rank)
        code = 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reason in the record
        reason = failure_reason(exc)
        if not reason.startswith(KNOWN_FAILURES):  # the reason says it all; anything else may be a bug
            traceback.print_exc(file=sys.stderr)
        answer = Answer.failed(reason)
        code = 1
    exit_if_orphaned()  # no answer for a parent that is gone
    if code and distributed:
        answer.write(rank_answer_path(Path(request.result), rank))
    elif rank == 0:
        answer.write(Path(request.result))
    return code


def rank_answer_path(result: Path, rank: int) -> Path:
    """Where rank `rank` of a data-parallel run leaves its reason when it fails."""
    return result.parent / f"rank{rank}.json"


def import_torch() -> ModuleType:
    """torch and what it imports lazily on the first optimizer (torch._dynamo, sympy: about 1 s
    on a small CPU), so that import time is not taken for building the data or the model."""
    import torch
    import torch._dynamo  # noqa: F401

    return torch


def _train(request: Request, rank: int = 0) -> Answer:
    torch = import_torch()
    t_import = time.perf_counter() - _START
    spec = request.spec
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    if spec.interop_threads is not None:
        torch.set_num_interop_threads(spec.interop_threads)
    if not spec.is_cuda:  # inductor's C++ build warns that no CUDA runtime was found: true, and beside the point
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    from ..machine import runtime_fingerprint
    from .loop import train

    bar = ProgressBar(label=request.label) if request.progress else None
    try:
        outcome = train(
            spec, request.data, t_import_s=t_import, progress=bar.update if bar else None,
            on_step=_fault_injector(rank), out_dir=Path(request.out),
            run_id=request.run_id,
        )
    finally:
        if bar:
            bar.close()
    from .distributed import stop

    stop()  # every rank has what it needs: the gather was the last collective
    if rank != 0:
        return Answer(status=OK)
    exit_if_orphaned()  # a picture with no record beside it would mislead
    metrics = _with_digits(outcome.model, Path(request.out) / SAMPLES_DIR / f"{request.run_id}.png", outcome.metrics)
    return Answer(
        status=OK,
        metrics=metrics,
        step_ms=outcome.step_ms,
        step_samples=outcome.step_samples,
        excluded_steps=outcome.excluded_steps,
        rank_step_ms=outcome.rank_step_ms,
        allreduce_ms=outcome.allreduce_ms,
        runtime=runtime_fingerprint(),
        main_cpu_s=_own_cpu_s(),
    )


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _fault_injector(rank: int = 0) -> Callable[[int], None] | None:
    """VAEBENCH_FAULT=oom|cpu-oom|crash|hang fails the run after its first step: tests of crash
    safety. `cpu-oom` asks the real CPU allocator for 64 TiB, so the message is torch's own.
    VAEBENCH_FAULT_RANK=r limits it to rank r of a data-parallel run."""
    fault = os.environ.get("VAEBENCH_FAULT")
    target = os.environ.get("VAEBENCH_FAULT_RANK")
    if not fault or (target is not None and int(target) != rank):
        return None

    def inject(step: int) -> None:
        if fault == "oom":
            import torch

            raise torch.OutOfMemoryError("injected: tried to allocate 1 TiB")
        if fault == "cpu-oom":
            import torch

            torch.empty(1 << 46, dtype=torch.uint8)
        if fault == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if fault == "hang":
            time.sleep(3600)

    return inject


# Messages that mean memory ran out without torch's OutOfMemoryError: cuBLAS failing to
# allocate its workspace (a RuntimeError), and the CPU allocator ("[enforce fail ...]
# DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes").
OOM_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "defaultcpuallocator: can't allocate memory")
# binary_cross_entropy refusing a decoder output that went NaN: the loss diverged mid-epoch.
DIVERGED_MESSAGES = ("all elements of input should be between 0 and 1",)
KNOWN_FAILURES = ("out of memory:", "diverged:")


def failure_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    whole = str(exc).lower()
    if type(exc).__name__ == "OutOfMemoryError" or any(m in whole for m in OOM_MESSAGES):
        return f"out of memory: {first}"
    if type(exc).__name__ == "Diverged":
        return first
    if any(m in whole for m in DIVERGED_MESSAGES):
        return "diverged: the decoder's output went NaN, so the loss could not be computed; lower --lr"
    return f"{type(exc).__name__}: {first}"


def _with_digits(model: Any, path: Path, metrics: TrainMetrics) -> TrainMetrics:
    """Save the digits picture; `metrics` with a warning where it could not be written (a full
    disk, a folder gone): the run trained all the same, and its numbers stand."""
    try:
        _save_digits(model, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # a torn picture would pass for the model's digits
        warning = f"the digits picture could not be written to {path}: {exc.strerror or exc}"
        return dataclasses.replace(metrics, warnings=[*metrics.warnings, warning])
    return metrics


def _save_digits(model: Any, path: Path) -> None:
    from torchvision.utils import save_image

    from .model import sample_digits

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(sample_digits(model), str(path), nrow=8, padding=2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
