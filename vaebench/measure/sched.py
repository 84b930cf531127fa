"""The training process's threads as the scheduler sees them, read from /proc by the parent.

`/proc/<pid>/task/<tid>/schedstat` holds three counters per thread: nanoseconds on a CPU,
nanoseconds runnable but waiting in a run queue for one, and timeslices run. The middle one
is how oversubscription shows: threads that are ready to work and have no core. The state
letter in `/proc/<pid>/task/<tid>/stat` (R: running or waiting for a core) says how many
were runnable at the instant of a sample. A thread that exits takes its counters with it,
so each thread's last reading is kept and the sums never go back.

Where /proc lacks these files (macOS, some sandboxes) the readings are absent and `note`
says why; nothing raises.
"""

from __future__ import annotations

from pathlib import Path

from ..machine import proc_stat_fields

NS = 1e-9


class TaskSampler:
    """Cumulative CPU and run-queue time of one process's threads, and how many run now."""

    def __init__(self, pid: int, proc: Path = Path("/proc")) -> None:
        self.tasks = proc / str(pid) / "task"
        self.last: dict[str, tuple[float, float]] = {}  # thread id -> (cpu s, run-queue s), last seen
        self.threads_seen = False  # a reading listed the threads at least once

    def read(self) -> dict[str, float]:
        """`os_threads` and `runnable` now; `task_cpu_s` and `runqueue_s` summed over every
        thread seen so far. Empty when the process is gone or /proc does not show its threads."""
        try:
            ids = [entry.name for entry in self.tasks.iterdir()]
        except OSError:  # no /proc here, or the process has exited
            return {}
        runnable, counted = 0, 0
        for tid in ids:
            state = _state(self.tasks / tid / "stat")
            if state is None:  # the thread exited between the listing and the read
                continue
            counted += 1
            runnable += state == "R"
            times = _schedstat(self.tasks / tid / "schedstat")
            if times is not None:
                self.last[tid] = times
        if not counted:
            return {}
        self.threads_seen = True
        reading = {"os_threads": float(counted), "runnable": float(runnable)}
        if self.last:
            reading["task_cpu_s"] = sum(cpu for cpu, _ in self.last.values())
            reading["runqueue_s"] = sum(wait for _, wait in self.last.values())
        return reading

    @property
    def note(self) -> str:
        """Why the readings are missing, or ""."""
        if not self.threads_seen:
            return f"{self.tasks} could not be read (no /proc here?): thread counts and run-queue wait unknown"
        if not self.last:
            return ("no /proc/<pid>/task/*/schedstat here (a kernel without schedstats, or a sandbox): "
                    "run-queue wait unknown")
        return ""


def _state(path: Path) -> str | None:
    """The state letter of a `stat` line."""
    fields = proc_stat_fields(path)
    return fields[0] if fields else None


def _schedstat(path: Path) -> tuple[float, float] | None:
    try:
        fields = path.read_text().split()
        return int(fields[0]) * NS, int(fields[1]) * NS
    except (OSError, ValueError, IndexError):
        return None
