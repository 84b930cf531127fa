"""Who else is in a results folder: another vaebench measuring there, or an orphaned child.

Lock files under `DIR/.locks/`, each held with `flock` by a live process, say which processes
they stand for (a small JSON object):

- `sweep-<pid>.lock` is held by a vaebench process while it runs points into DIR. Another one
  that finds it held warns: two sweeps on one folder measure each other, each the other's busy
  neighbour (`neighbour_cpu_pct` in their records says by how much).
- `child-<pid>-<id>.lock` is opened by the parent before it starts a training child and is
  inherited by the child (and by its DataLoader workers), so it stays held while any of them
  lives. Found held with its parent gone, it marks an orphan: a child that missed its
  parent-death signal (`train.lifeline`). Before anything runs here the orphan's process group
  is killed, so that no run is measured beside it, and its temp folder is removed.

A lock dies with the processes that hold it, so nothing stale can block a later command; a
file left by a killed process is removed by the next one that finds it unheld.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from ..storage import LOCKS_DIR

ORPHAN_WAIT_S = 5.0  # how long a killed orphan's group gets to let go of its lock
SCRATCH_PREFIX = "vaebench-"  # run_once's temp folders: the only folders a reaper removes

Report = Callable[[str], None]


class ChildLock:
    """Held from before a child starts until it has been waited for; `fd` is passed to the child."""

    def __init__(self, folder: Path, scratch: Path | None = None) -> None:
        locks = Path(folder) / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        self.path = locks / f"child-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.info: dict[str, Any] = {"parent": os.getpid(), "scratch": str(scratch or "")}
        self._write()

    def started(self, pid: int) -> None:
        self.info["child"] = pid
        self._write()

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)

    def __enter__(self) -> ChildLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> None:
        data = json.dumps(self.info).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)


def reap_orphans(folder: Path, report: Report | None = None) -> list[int]:
    """Kill the training children in `folder` whose vaebench is gone; return their pids.
    Lock files nobody holds are removed, with the temp folders they name."""
    killed = []
    for path in sorted((Path(folder) / LOCKS_DIR).glob("child-*.lock")):
        info = _read(path)
        child = info.get("child")
        if _held(path):
            if _alive(info.get("parent")) or not isinstance(child, int):
                continue  # another vaebench's child, running now; or one not started yet
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)  # the child leads its group: its workers go too
            _wait_unheld(path, ORPHAN_WAIT_S)
            killed.append(child)
            if report is not None:
                report(f"warning: killed an orphaned training child (pid {child}) left in {folder} by a vaebench "
                       f"that was killed (pid {info.get('parent')}); it would have slowed every run here")
        _remove_scratch(info.get("scratch"))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return killed


@contextlib.contextmanager
def sweep_lock(folder: Path) -> Iterator[Callable[[], list[int]]]:
    """Mark `folder` as being measured into by this process while inside; yields a function
    that lists the other vaebench processes measuring into it now."""
    locks = Path(folder) / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"sweep-{os.getpid()}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lambda: others_measuring(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def others_measuring(folder: Path) -> list[int]:
    """Pids of the other vaebench processes running points into `folder` now."""
    found = []
    for path in sorted((Path(folder) / LOCKS_DIR).glob("sweep-*.lock")):
        pid = path.stem.removeprefix("sweep-")
        if pid == str(os.getpid()) or not pid.isdigit():
            continue
        if _held(path):
            found.append(int(pid))
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return found


def _held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of the lock, if it was taken
    return False


def _wait_unheld(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _held(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _read(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _remove_scratch(scratch: object) -> None:
    """A killed run's temp folder, if it is one of run_once's under the temp root."""
    if not isinstance(scratch, str) or not scratch:
        return
    path = Path(scratch)
    if path.name.startswith(SCRATCH_PREFIX) and path.parent == Path(tempfile.gettempdir()):
        shutil.rmtree(path, ignore_errors=True)
