"""Starting the training child and measuring its whole process tree, as `/usr/bin/time` does."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..result import ProcessUsage
from .occupants import ChildLock, reap_orphans

Clock = Callable[[], float]


@dataclass(frozen=True)
class ChildExit:
    usage: ProcessUsage
    timed_out: bool
    signal: int | None  # the signal that ended the child, if one did
    stderr_tail: str = ""  # the end of what it wrote to stderr, when asked to keep it


def run_child(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    timeout: float | None = None,
    clock: Clock = time.perf_counter,
    poll_s: float = 0.02,  # how often the timeout is checked; the child's exit wakes the wait at once
    on_start: Callable[[int], None] | None = None,
    keep_stderr: int = 0,
    folder: Path | None = None,
    scratch: Path | None = None,
) -> ChildExit:
    """Run `argv` in a new session and measure it as `/usr/bin/time` does.

    `os.wait4` returns the child's rusage including every descendant it waited for, so
    DataLoader workers' and torchrun's ranks' CPU time is counted. On a timeout or on any
    exception here, an interrupt included (SIGTERM and SIGHUP raise one under
    `errors.stop_signals_raise`), the child's whole tree is killed: its process group, and every
    descendant that started a session of its own (torchrun's ranks do). With `keep_stderr`, the
    child's stderr still goes to ours as it comes, and its last `keep_stderr` bytes come back in
    the answer. With `folder` (the results folder), orphans of killed runs there are killed
    first and the child is registered there (`occupants.ChildLock`, naming its temp folder
    `scratch`) until it has been waited for.
    """
    if folder is not None:
        reap_orphans(folder, report=lambda line: print(line, file=sys.stderr))
    with ChildLock(folder, scratch) if folder is not None else contextlib.nullcontext() as lock:
        start = clock()
        proc = subprocess.Popen(list(argv), env=env, start_new_session=True,
                                stderr=subprocess.PIPE if keep_stderr else None,
                                pass_fds=(lock.fd,) if lock is not None else ())
        tee = _Tee(proc.stderr, keep_stderr) if proc.stderr is not None else None
        timed_out = False
        exited = _ExitWatch(proc.pid)
        try:
            if lock is not None:
                lock.started(proc.pid)
            if on_start is not None:
                on_start(proc.pid)
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if timeout is not None and clock() - start > timeout:
                    timed_out = True
                    kill_tree(proc.pid)
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                exited.wait(poll_s)
        except BaseException:
            kill_tree(proc.pid)
            os.wait4(proc.pid, 0)
            proc.returncode = -1
            raise
        finally:
            exited.close()
            if tee is not None:
                tee.join()
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
            minor_faults=usage.ru_minflt,
            major_faults=usage.ru_majflt,
        ),
        timed_out=timed_out,
        signal=-proc.returncode if proc.returncode < 0 else None,
        stderr_tail=tee.text() if tee is not None else "",
    )


def kill_tree(pid: int) -> None:
    """SIGKILL the process group of `pid` and every descendant of `pid`, wherever its group."""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    _kill_group(pid)
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Tee:
    """Copies a child's stream to our stderr as it arrives and keeps its last `keep` bytes."""

    def __init__(self, stream: IO[bytes], keep: int) -> None:
        self.stream, self.keep = stream, keep
        self.tail = b""
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        out = getattr(sys.stderr, "buffer", None)
        while chunk := os.read(self.stream.fileno(), 65536):
            self.tail = (self.tail + chunk)[-self.keep :]
            if out is not None:
                out.write(chunk)
                out.flush()
            else:
                sys.stderr.write(chunk.decode(errors="replace"))

    def join(self) -> None:
        self.thread.join(timeout=5)
        self.stream.close()

    def text(self) -> str:
        return self.tail.decode(errors="replace")


def _maxrss_mb(maxrss: int) -> float:
    # Linux reports kilobytes, macOS bytes.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


class _ExitWatch:
    """Waits until a child exits or a time passes, whichever comes first: a pidfd turns readable
    the moment the child ends, so real_s does not carry a polling interval's delay (up to
    `poll_s`, 10 ms on average). Where pidfds are missing (Linux before 5.3, other systems,
    some sandboxes) it sleeps the whole time instead."""

    def __init__(self, pid: int) -> None:
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, seconds: float) -> None:
        if self.fd is None:
            time.sleep(seconds)
        else:
            select.select([self.fd], [], [], seconds)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
