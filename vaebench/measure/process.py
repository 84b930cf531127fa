"""Starting the training child and measuring its whole process tree, as `/usr/bin/time` does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..result import ProcessUsage

Clock = Callable[[], float]


@dataclass(frozen=True)
class ChildExit:
    usage: ProcessUsage
    timed_out: bool
    signal: int | None  # the signal that ended the child, if one did


def run_child(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    timeout: float | None = None,
    clock: Clock = time.perf_counter,
    poll_s: float = 0.02,
    on_start: Callable[[int], None] | None = None,
) -> ChildExit:
    """Run `argv` in a new session and measure it as `/usr/bin/time` does.

    `os.wait4` returns the child's rusage including every descendant it waited for, so
    DataLoader workers' CPU time is counted. Killing by process group takes the workers
    down with the child on a timeout or an interrupt.
    """
    start = clock()
    proc = subprocess.Popen(list(argv), env=env, start_new_session=True)
    if on_start is not None:
        on_start(proc.pid)
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and clock() - start > timeout:
                timed_out = True
                _kill_group(proc.pid)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(poll_s)
    except BaseException:
        _kill_group(proc.pid)
        os.wait4(proc.pid, 0)
        proc.returncode = -1
        raise
    real = clock() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildExit(
        usage=ProcessUsage(
            real_s=real,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            peak_rss_mb=_maxrss_mb(usage.ru_maxrss),
            ctx_voluntary=usage.ru_nvcsw,
            ctx_involuntary=usage.ru_nivcsw,
            exit_code=proc.returncode,
        ),
        timed_out=timed_out,
        signal=-proc.returncode if proc.returncode < 0 else None,
    )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _maxrss_mb(maxrss: int) -> float:
    # Linux reports kilobytes, macOS bytes.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024
