"""The training child never outlives vaebench: SIGTERM, SIGHUP, SIGINT or SIGKILL of the parent.

Each test starts a real `vaebench run` that would train for minutes, signals it once its
child is training, and checks one second later that no process of the child's group (the
child and any DataLoader worker) is alive, that the temp folder is gone where the parent
could clean up, and that the results folder holds no half-written record or orphan PNG.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._processes import alive_in_groups, request_folder, training_children, wait_for_child
from vaebench.measure.occupants import reap_orphans
from vaebench.storage import LOCKS_DIR, read_rows

ROOT = Path(__file__).resolve().parents[2]
FOREVER = ["--data", "synthetic", "--samples", "2048", "--batch-size", "32", "--epochs", "1000", "--threads", "1"]


def start(out: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "vaebench.cli", "run", *FOREVER, *extra, "--out", str(out)]
    # SIGINT is ignored in the background children of some shells; put its default back.
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.fixture
def groups() -> Iterator[set[int]]:
    """The process groups of the children a test saw; whatever is left of them is killed after
    the test, so that a failing test does not leave a training process behind."""
    seen: set[int] = set()
    yield seen
    for group in seen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def assert_store_intact(out: Path) -> None:
    rows = read_rows(out) if (out / "runs.jsonl").exists() else []
    ids = {row["run_id"] for row in rows}
    pictures = {path.stem for path in (out / "samples").glob("*.png")} if (out / "samples").exists() else set()
    assert pictures <= ids, f"samples without a record: {pictures - ids}"


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signalled_run_ends_its_child_cleans_up_and_exits_128_plus_the_signal(
    tmp_path: Path, groups: set[int], signum: int, status: int
) -> None:
    out = tmp_path / "out"
    proc = start(out, "--workers", "1")
    children = wait_for_child(proc.pid, settle=1.0)
    groups.update(child.pid for child in children)
    scratch = request_folder(children[0])
    assert scratch.exists()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    time.sleep(1.0)
    assert not alive_in_groups(groups), "a training process outlived vaebench"
    assert not scratch.exists(), "the temp folder was left behind"
    assert_store_intact(out)


@pytest.mark.parametrize("settle", [0.0, 1.0], ids=["while-the-child-starts", "while-it-trains"])
def test_kill_9_of_the_parent_takes_the_child_down_too(tmp_path: Path, groups: set[int], settle: float) -> None:
    out = tmp_path / "out"
    proc = start(out, "--workers", "1")
    # At once: the parent may die before the child has asked to die with it (it then checks
    # its parent against the pid vaebench put in its environment).
    children = wait_for_child(proc.pid, settle=settle)
    groups.update(child.pid for child in children)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)  # not communicate(): an orphan would hold the pipes open
    time.sleep(1.0)
    assert not alive_in_groups(groups), "the training child outlived its killed parent"
    assert_store_intact(out)
    # The killed parent could not remove its temp folder; the next vaebench in the folder does.
    locks = [json.loads(path.read_text() or "{}") for path in (out / LOCKS_DIR).glob("child-*.lock")]
    scratch = [Path(info["scratch"]) for info in locks if info.get("scratch")]
    assert scratch and all(path.exists() for path in scratch)
    reap_orphans(out)
    assert not any(path.exists() for path in scratch), "the killed run's temp folder outlived the next one"


def test_kill_9_of_the_parent_takes_torchrun_and_every_rank_down_too(tmp_path: Path, groups: set[int]) -> None:
    import psutil

    # A sweep, not `run`: run would first measure one rank (the scaling baseline), here forever.
    argv = [sys.executable, "-m", "vaebench.cli", "sweep", *FOREVER, "--nproc-per-node", "2", "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 120
    tree: list[psutil.Process] = []
    while time.monotonic() < deadline:  # past the one-rank baseline run: torchrun and its two ranks
        tree = psutil.Process(proc.pid).children(recursive=True)
        lines = [" ".join(p.cmdline()) for p in tree if p.is_running()]
        if any("torch.distributed.run" in line for line in lines) and len(training_children(proc.pid)) >= 2:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("torchrun and two ranks never appeared")
    time.sleep(1.0)
    tree = psutil.Process(proc.pid).children(recursive=True)
    groups.update(os.getpgid(p.pid) for p in tree if p.is_running())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], "torchrun or a rank outlived vaebench"
