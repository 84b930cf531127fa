"""Finding a vaebench command's training children by parentage, not by a system-wide name.

Other test sessions may run vaebench on the same machine at the same time, so a search by
command line (`pgrep -f vaebench.train.child`) would find their children too. A child is
found among the descendants of the command's own process while it runs; once the command is
gone, its children are looked for by their process group (each child leads its own).
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

CHILD = "vaebench.train.child"


def training_children(pid: int) -> list[psutil.Process]:
    """The live training children under process `pid`."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in below:
        try:
            if CHILD in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_for_child(pid: int, timeout: float = 120.0, *, settle: float = 0.0) -> list[psutil.Process]:
    """Wait until `pid` has a training child (and `settle` seconds more); return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = training_children(pid)
        if children:
            time.sleep(settle)
            return training_children(pid) or children
        time.sleep(0.05)
    raise AssertionError(f"no training child appeared under pid {pid} in {timeout:g} s")


def alive_in_groups(groups: set[int]) -> list[str]:
    """Live (not zombie) processes in any of the process groups: the children and their workers."""
    found = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if psutil.os.getpgid(proc.pid) in groups:  # type: ignore[attr-defined]
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])}")
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def request_folder(child: psutil.Process) -> Path:
    """The temp folder of a training child, from its `request.json` argument."""
    return Path(child.cmdline()[-1]).parent
