"""The training process's threads from a fake /proc: run-queue wait, thread count, runnable."""

from __future__ import annotations

import math
import os
from pathlib import Path

from vaebench.measure.monitor import Monitor, summarize
from vaebench.measure.sched import TaskSampler


def thread(proc: Path, tid: int, state: str, cpu_ns: int | None, wait_ns: int | None, name: str = "python") -> None:
    folder = proc / "42" / "task" / str(tid)
    folder.mkdir(parents=True, exist_ok=True)
    # The name may hold spaces and parentheses: the state is the first field after the last ')'.
    (folder / "stat").write_text(f"{tid} ({name}) {state} 1 42 42 0 -1 4194304 100 0 0 0 5 1\n")
    if cpu_ns is not None:
        (folder / "schedstat").write_text(f"{cpu_ns} {wait_ns} 17\n")


def test_threads_runnable_and_run_queue_wait_are_summed(tmp_path: Path) -> None:
    thread(tmp_path, 42, "R", 2_000_000_000, 500_000_000)
    thread(tmp_path, 43, "S", 1_000_000_000, 250_000_000, name="omp (worker) 1")
    thread(tmp_path, 44, "R", 0, 0)
    tasks = TaskSampler(42, tmp_path)
    reading = tasks.read()
    assert reading == {"os_threads": 3.0, "runnable": 2.0, "task_cpu_s": 3.0, "runqueue_s": 0.75}
    assert tasks.note == ""


def test_a_thread_that_exits_keeps_its_wait_so_the_sum_never_falls(tmp_path: Path) -> None:
    thread(tmp_path, 42, "R", 1_000_000_000, 100_000_000)
    thread(tmp_path, 43, "S", 1_000_000_000, 400_000_000)
    tasks = TaskSampler(42, tmp_path)
    assert tasks.read()["runqueue_s"] == 0.5
    for name in ("stat", "schedstat"):
        (tmp_path / "42" / "task" / "43" / name).unlink()
    (tmp_path / "42" / "task" / "43").rmdir()
    thread(tmp_path, 42, "S", 1_100_000_000, 200_000_000)
    reading = tasks.read()
    assert reading["os_threads"] == 1.0 and math.isclose(reading["runqueue_s"], 0.6)


def test_without_schedstat_threads_are_counted_and_the_wait_is_unknown_with_a_note(tmp_path: Path) -> None:
    thread(tmp_path, 42, "R", None, None)
    tasks = TaskSampler(42, tmp_path)
    assert tasks.read() == {"os_threads": 1.0, "runnable": 1.0}
    assert "schedstat" in tasks.note and "run-queue wait unknown" in tasks.note


def test_without_proc_nothing_raises_and_the_note_says_why(tmp_path: Path) -> None:
    tasks = TaskSampler(42, tmp_path / "no-proc")
    assert tasks.read() == {}
    assert "could not be read" in tasks.note


def test_the_monitor_reads_a_real_process_threads() -> None:
    monitor = Monitor(0.05, cpu_percent=lambda: [10.0])
    monitor.watch(os.getpid())
    sample = monitor.sample_once()
    assert sample["os_threads"] >= 1 and sample["runnable"] >= 1  # this thread is running
    if Path(f"/proc/{os.getpid()}/task").is_dir() and "runqueue_s" in sample:
        assert sample["runqueue_s"] >= 0 and sample["task_cpu_s"] > 0


def test_run_queue_wait_covers_the_training_window_and_notes_pass_through() -> None:
    samples = [
        {"t": 0.0, "runqueue_s": 0.0, "os_threads": 1.0, "runnable": 1.0},
        {"t": 1.0, "runqueue_s": 1.0, "os_threads": 5.0, "runnable": 4.0},
        {"t": 2.0, "runqueue_s": 3.0, "os_threads": 5.0, "runnable": 2.0},
        {"t": 3.0, "runqueue_s": 3.5, "os_threads": 2.0, "runnable": 1.0},
    ]
    summary = summarize(samples, 1.0, window=(0.5, 2.5))
    assert summary.runqueue_wait_s == 3.25 - 0.5  # interpolated at both ends
    assert (summary.os_threads_max, summary.runnable_max, summary.runnable_mean) == (5.0, 4.0, 3.0)
    whole = summarize(samples, 1.0, sched_note="no schedstat")
    assert whole.runqueue_wait_s == 3.5 and whole.sched_note == "no schedstat"
    assert math.isnan(summarize([{"t": 0.0, "cpu_util": 5.0}], 1.0).runqueue_wait_s)
