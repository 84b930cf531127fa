"""`vaebench run --syscalls`: which system calls the training child spends its kernel time in.

A separate diagnostic run of the same spec under a tracer, never the timed run: tracing every
call slows a futex-heavy process several times over. `strace -c -f` is used where it exists
(its `seconds` are its estimate of the system time in each call; for futex they include the
sleeps), else `perf trace -s` where that works (wall time in each call, summed over the
per-thread tables it prints). The table covers the whole child tree, torch's import
included; the summary names the top calls.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..result import SyscallCount
from .process import ChildExit, run_child

INSTALL = ("--syscalls needs strace (Debian: apt-get install strace) or a perf whose `perf trace` works here "
           "(Debian: apt-get install linux-perf); neither was found")


@dataclass(frozen=True)
class Tracer:
    name: str  # as recorded: "strace -c -f" or "perf trace -s"
    prefix: Callable[[str], list[str]]  # the command line before the traced one, given the output file
    parse: Callable[[str], tuple[SyscallCount, ...]]


def strace_prefix(out: str) -> list[str]:
    # -c counts calls, errors and system time per syscall; -f follows every thread and child.
    return ["strace", "-c", "-f", "-o", out, "--"]


def perf_prefix(out: str) -> list[str]:
    return ["perf", "trace", "-s", "-o", out, "--"]


def parse_strace(text: str) -> tuple[SyscallCount, ...]:
    """strace -c's table (`% time  seconds  usecs/call  calls  errors  syscall`), most seconds first."""
    counts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[-1] == "total" or not _is_number(fields[0]):
            continue
        # The errors column is blank for a call that never failed: 5 fields instead of 6.
        errors = int(fields[4]) if len(fields) >= 6 else 0
        counts.append(SyscallCount(syscall=fields[-1], calls=int(fields[3]), errors=errors, seconds=float(fields[1])))
    return _ranked(counts)


def parse_perf_trace(text: str) -> tuple[SyscallCount, ...]:
    """perf trace -s's per-thread tables (`syscall calls errors total(msec) min avg max stddev`),
    summed over threads, most seconds first."""
    totals: dict[str, list[float]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or not all(_is_number(f) for f in fields[1:4]):
            continue
        entry = totals.setdefault(fields[0], [0, 0, 0.0])
        entry[0] += int(fields[1])
        entry[1] += int(fields[2])
        entry[2] += float(fields[3]) / 1e3
    return _ranked([SyscallCount(name, int(c), int(e), s) for name, (c, e, s) in totals.items()])


STRACE = Tracer("strace -c -f", strace_prefix, parse_strace)
PERF = Tracer("perf trace -s", perf_prefix, parse_perf_trace)


def find_tracer(which: Callable[[str], str | None] | None = None,
                perf_works: Callable[[], bool] | None = None) -> Tracer:
    """strace where it exists, else perf trace where it works; raises UsageError naming what to install."""
    which = which or shutil.which
    if which("strace"):
        return STRACE
    if which("perf") and (perf_works or _perf_trace_works)():
        return PERF
    raise UsageError(INSTALL)


def _perf_trace_works() -> bool:
    """`perf trace` needs tracepoints and permission that many machines and sandboxes refuse."""
    try:
        return subprocess.run(["perf", "trace", "-s", "--", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def trace(tracer: Tracer, argv: Sequence[str], *, env: dict[str, str], timeout: float | None
          ) -> tuple[ChildExit, tuple[SyscallCount, ...]]:
    """Run `argv` under `tracer`; its exit and the syscall table (empty if the tracer wrote none)."""
    with tempfile.TemporaryDirectory(prefix="vaebench-trace-") as tmp:
        out = Path(tmp) / "syscalls.txt"
        exit_ = run_child([*tracer.prefix(str(out)), *argv], env=env, timeout=timeout)
        text = out.read_text(errors="replace") if out.exists() else ""
    return exit_, tracer.parse(text)


def _ranked(counts: list[SyscallCount]) -> tuple[SyscallCount, ...]:
    return tuple(sorted(counts, key=lambda c: (-c.seconds, -c.calls, c.syscall)))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
