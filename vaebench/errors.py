"""What can go wrong, as exceptions that carry their exit status.

`cli.main` catches `VaebenchError` once and prints its message as one line. Anything else that
escapes a command is a bug (in vaebench or a library under it): it prints its traceback, asks
for a report, and exits with `EXIT_BUG`, never with the status of bad input.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

EXIT_OK = 0
EXIT_FAILED = 1  # a run failed, or compare found a regression
EXIT_USAGE = 2  # bad usage or input, refused before anything ran
EXIT_BUG = 70  # an internal error (sysexits' EX_SOFTWARE): please report it
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130; SIGTERM gives 143, SIGHUP 129
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: the reader of stdout went away (`| head`)
BUG_REPORT = "this is a bug in vaebench or a library it uses; please report it with the traceback above"


class VaebenchError(Exception):
    """A failure vaebench understands; `exit_code` is the process's exit status."""

    exit_code = EXIT_FAILED


class UsageError(VaebenchError, ValueError):
    """Bad usage or input (an option, a file, a results folder): exit status 2."""

    exit_code = EXIT_USAGE


class Interrupted(VaebenchError):
    """Stopped by a signal: Ctrl-C (130), SIGTERM (143), SIGHUP (129); what finished is kept."""

    def __init__(self, signum: int = signal.SIGINT, message: str = "") -> None:
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


STOPS = (KeyboardInterrupt, Interrupted)  # what a stop signal raises: Ctrl-C's, and SIGTERM's or SIGHUP's


def signal_of(stop: BaseException) -> int:
    """The signal behind a stop: `Interrupted` names its own, KeyboardInterrupt is Ctrl-C's SIGINT."""
    return stop.signum if isinstance(stop, Interrupted) else signal.SIGINT


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # `timeout`, a CI cancel, `docker stop`, a closed terminal


@contextlib.contextmanager
def signals_raise(signums: Iterable[int], exception: Callable[[int], BaseException]) -> Iterator[None]:
    """Inside, each of `signums` raises `exception(signum)` in the main thread, so that every
    `finally` and context manager on the way out runs; the previous handlers come back after.
    Elsewhere than the main thread, where Python cannot set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise exception(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


def stop_signals_raise() -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGHUP raise `Interrupted`, as Ctrl-C raises KeyboardInterrupt: the training
    child's process group is killed, its temp folder removed, finished records kept. Their
    default action would end the process on the spot and leave the child training on."""
    return signals_raise(STOP_SIGNALS, Interrupted)
