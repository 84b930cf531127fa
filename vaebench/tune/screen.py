"""The batch search in one warm process: `python -m vaebench.tune.screen REQUEST.json`.

An isolated run pays three to four seconds of Python, torch and data start-up before its
first step; a climb over ten batch sizes would spend most of its time starting processes.
The screen pays that once and runs every throughput trial of the search in one child, each
with its own fresh model, optimizer and loader and a short warm-up. What can leak
between trials (allocator caches, warm CPU caches) favours no batch size in particular, and
the tuner confirms the leading candidates afterwards in isolated runs.

Each trial is appended to `trials.jsonl` in the work folder as soon as it ends, and a
`started` line precedes it, so a child killed mid-trial (the kernel's out-of-memory killer,
a timeout) still leaves every finished trial and names the batch it died on.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import STOPS, signal_of
from ..result import FAILED, DataInfo
from ..rules import SAMPLE_HZ
from ..spec import RunSpec
from .search import SearchResult, Trial

TRIALS_FILE = "trials.jsonl"
# Warm-up steps of every trial in this one warm process: libraries, code paths and the
# allocator are warm after the first trial, so two steps absorb a new batch size's first touch
# (isolated runs keep the loop's ten).
WARM_PROCESS_WARMUP = 2
ANSWER_FILE = "answer.json"
STARTUP_GRACE_S = 30.0  # the child's own start-up, on top of the search's share of the budget


def screen(
    base: RunSpec,
    data: DataInfo,
    *,
    work: Path,
    max_batch: int,
    start: int,
    budget_s: float,
) -> SearchResult:
    """Run `tune.search.search_batch` for `base` in one child; this side imports no torch."""
    from ..measure.child_env import child_process_env
    from ..measure.process import run_child

    work.mkdir(parents=True, exist_ok=True)
    for name in (TRIALS_FILE, ANSWER_FILE):
        (work / name).unlink(missing_ok=True)
    request = work / "request.json"
    request.write_text(json.dumps({
        "spec": base.to_dict(), "data": dataclasses.asdict(data), "max_batch": max_batch,
        "start": start, "budget_s": budget_s, "work": str(work),
    }))
    try:
        exit_ = run_child([sys.executable, "-m", "vaebench.tune.screen", str(request)], env=child_process_env(base),
                          timeout=budget_s + STARTUP_GRACE_S, folder=work.parent)
    except STOPS as stop:  # the child is killed by now; its finished trials are in the work folder
        result = read_trials(work, stopped=True)
        result.interrupted = signal_of(stop)
        result.stop_reason = "interrupted; trials finished before that are kept"
        return result
    result = read_trials(work)
    answer = _read_json(work / ANSWER_FILE)
    if answer is not None:
        result.stop_reason = str(answer["stop_reason"])
        result.budget_hit = bool(answer["budget_hit"])
        result.reached_max = bool(answer.get("reached_max", False))
        total = answer.get("device_total_mb")
        result.device_total_mb = math.nan if total is None else float(total)
    else:
        how = "timed out" if exit_.timed_out else f"died (exit status {exit_.usage.exit_code})"
        result.stop_reason = f"the screening process {how}; trials finished before that are kept"
    return result


def read_trials(work: Path, *, stopped: bool = False) -> SearchResult:
    """The finished trials, plus a failed one for a batch whose trial never finished, unless the
    screen was `stopped` (an interrupt): then that trial was killed, not crashed, and is left out."""
    result = SearchResult()
    started: dict[str, Any] | None = None
    path = work / TRIALS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "started" in row:
            started = row["started"]
        else:
            trial = Trial.from_dict(row)
            # The climb's batches are powers of two; the refinement's midpoint is not.
            power = trial.batch & (trial.batch - 1) == 0
            result.trials.append(dataclasses.replace(trial, stage="climb" if power else "refine"))
            started = None
    if started is not None and not stopped:
        reason = "crashed mid-trial (the kernel's out-of-memory killer?)"
        result.trials.append(Trial(spec=RunSpec.from_dict(started), status=FAILED, reason=reason, stage="climb"))
    return result


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()


def main(argv: list[str]) -> int:
    from ..train.lifeline import tie_to_parent

    tie_to_parent()
    import torch

    from ..measure.monitor import Monitor, open_gpu_probe
    from ..train.child import failure_reason
    from ..train.loop import train
    from .search import search_batch

    request = json.loads(Path(argv[0]).read_text())
    base = RunSpec.from_dict(request["spec"])
    data = DataInfo(**request["data"])
    work = Path(request["work"])
    if base.threads is not None:
        torch.set_num_threads(base.threads)
    if base.interop_threads is not None:
        torch.set_num_interop_threads(base.interop_threads)
    if base.is_cuda:
        # The allocator's statistics exist only once CUDA is up: resetting them first on a
        # fresh process fails with "Invalid device argument" (seen on an H200).
        torch.cuda.init()

    def measure(spec: RunSpec) -> Trial:
        _append(work / TRIALS_FILE, {"started": spec.to_dict()})
        monitor = Monitor(1.0 / SAMPLE_HZ, gpu=open_gpu_probe(spec.device))
        if spec.is_cuda:
            torch.cuda.reset_peak_memory_stats(spec.device)
        t0 = time.perf_counter()
        try:
            with monitor:
                metrics = train(spec, data, warmup=WARM_PROCESS_WARMUP).metrics
            # GPU utilization over the training steps only, not the model build around them.
            summary = monitor.summary(metrics.train_start_unix, metrics.train_end_unix, metrics.t_first_step_s)
            peak = torch.cuda.max_memory_allocated(spec.device) / 2**20 if spec.is_cuda else math.nan
            trial = Trial(spec=spec, samples_per_s=metrics.samples_per_s, gpu_util=summary.gpu_util_mean,
                          alloc_peak_mb=peak, wall_s=time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - out of memory is a data point, not a crash
            trial = Trial(spec=spec, status=FAILED, reason=failure_reason(exc), wall_s=time.perf_counter() - t0)
            if not trial.out_of_memory:
                traceback.print_exc(file=sys.stderr)  # anything else is a bug: show where
        if not trial.ok:
            gc.collect()  # the failed trial's traceback and generator cycles still hold its tensors
        if spec.is_cuda:
            torch.cuda.empty_cache()  # after an out-of-memory error the next trial starts clean
        _append(work / TRIALS_FILE, trial.to_dict())
        print(f"screen {trial.describe()}", file=sys.stderr, flush=True)
        return trial

    deadline = time.monotonic() + float(request["budget_s"])
    result = search_batch(base, measure, max_batch=int(request["max_batch"]), start=int(request["start"]),
                          clock=time.monotonic, deadline=deadline, warmup=WARM_PROCESS_WARMUP)
    total = torch.cuda.get_device_properties(torch.device(base.device)).total_memory / 2**20 if base.is_cuda else None
    (work / ANSWER_FILE).write_text(json.dumps({
        "stop_reason": result.stop_reason, "budget_hit": result.budget_hit, "reached_max": result.reached_max,
        "device_total_mb": total,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
