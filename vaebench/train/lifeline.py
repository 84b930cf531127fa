"""A child's tie to the process that started it: when that parent dies, even by `kill -9`, the
child dies too, and never writes a record or a samples picture for a run no one measures.

On Linux the kernel sends SIGKILL at the parent's death (`prctl(PR_SET_PDEATHSIG)`): that also
reaches torchrun's ranks, which start sessions of their own where a kill aimed at the
launcher's process group would miss them. The parent may already be gone when that is asked,
even before this process got that far: so the parent's pid is compared, right after, with the
one vaebench put in the environment (`protocol.PARENT_PID_ENV`), or with a tracer that one
started it under. Elsewhere a daemon thread polls
the parent's pid every `POLL_S`. Before writing anything, a child checks its parent once more.

Run as a module, it ties itself to vaebench and then runs another module in its place:
`python -m vaebench.train.lifeline torch.distributed.run ...` is torchrun that dies with
vaebench, and takes its ranks along, since each of them is tied to torchrun.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from pathlib import Path

from ..machine import proc_stat_fields
from ..protocol import PARENT_PID_ENV

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5  # where there is no PR_SET_PDEATHSIG: how long an orphan may go on
EXIT_ORPHANED = 1
_parent: int | None = None  # the parent this process is tied to


def tie_to_parent(parent: int | None = None) -> None:
    """Die with `parent`: by default the vaebench that started this process, as its environment
    names it; a torchrun rank's is torchrun, its current parent. Call it first thing in a child."""
    global _parent
    _parent = parent if parent is not None else expected_parent()
    if not (sys.platform.startswith("linux") and _set_parent_death_signal()):
        threading.Thread(target=_poll, name="vaebench-lifeline", daemon=True).start()
    exit_if_orphaned()  # the parent died before the request took hold


def expected_parent() -> int:
    """The pid this process should die with: the environment's, unless torchrun started it."""
    text = os.environ.get(PARENT_PID_ENV, "")
    if "LOCAL_RANK" in os.environ or not text.isdigit():  # a rank: torchrun's own child
        return os.getppid()
    parent = os.getppid()
    # A tracer that vaebench put in between (`run --syscalls` starts the child under strace).
    return parent if parent_of(parent) == int(text) else int(text)


def parent_of(pid: int) -> int | None:
    """The parent of another process, from /proc; None where it cannot be read."""
    fields = proc_stat_fields(Path(f"/proc/{pid}/stat"))
    return int(fields[1]) if fields and len(fields) > 1 else None


def exit_if_orphaned() -> None:
    """End this process now if the parent it was tied to is gone: nothing it writes is wanted."""
    if _parent is not None and os.getppid() != _parent:
        _die()


def _set_parent_death_signal() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _poll() -> None:
    stop = threading.Event()
    while not stop.wait(POLL_S):
        exit_if_orphaned()


def _die() -> None:
    # A child started by vaebench leads its own process group: take its DataLoader workers along.
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(EXIT_ORPHANED)


def _run_tethered(argv: list[str]) -> None:
    import runpy

    tie_to_parent()
    module, sys.argv[1:] = argv[0], argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _run_tethered(sys.argv[1:])
