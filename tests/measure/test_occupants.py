"""Orphans of killed runs are killed before anything runs beside them; two sweeps on one folder warn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from vaebench.measure.execution import Planned, run_points
from vaebench.measure.occupants import ChildLock, others_measuring, reap_orphans, sweep_lock
from vaebench.measure.run import RunOptions
from vaebench.result import DataInfo, RunRecord
from vaebench.spec import RunSpec
from vaebench.sweep import Point

HOLD = "import sys, time; print('ready', flush=True); time.sleep(60)"
# Another sweep, as far as the folder can tell: it holds `sweep-<its pid>.lock`.
OTHER_SWEEP = ("import fcntl, os, sys, time; "
               "fd = os.open(os.path.join(sys.argv[1], f'sweep-{os.getpid()}.lock'), os.O_RDWR | os.O_CREAT); "
               "fcntl.flock(fd, fcntl.LOCK_EX); print('ready', flush=True); time.sleep(60)")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def start_fake_child(lock: ChildLock) -> subprocess.Popen[str]:
    """A stand-in for a training child: its own session, the lock's descriptor inherited."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD], start_new_session=True, pass_fds=(lock.fd,),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    lock.started(proc.pid)
    return proc


def test_an_orphan_is_killed_with_its_temp_folder_before_anything_runs(tmp_path: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="vaebench-"))
    lock = ChildLock(tmp_path, scratch)
    proc = start_fake_child(lock)
    lock.info["parent"] = dead_pid()  # the parent was killed: nobody will wait for this child
    lock._write()
    os.close(lock.fd)  # only the orphan holds the lock now
    lines: list[str] = []
    try:
        assert reap_orphans(tmp_path, lines.append) == [proc.pid]
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "orphaned training child" in lines[0]
    assert not scratch.exists() and not lock.path.exists()


def test_a_child_of_a_live_vaebench_is_left_alone(tmp_path: Path) -> None:
    with ChildLock(tmp_path) as lock:
        proc = start_fake_child(lock)
        try:
            assert reap_orphans(tmp_path) == []
            assert proc.poll() is None and lock.path.exists()
        finally:
            proc.kill()
            proc.wait()
    assert not lock.path.exists()


def test_a_lock_file_nobody_holds_is_removed(tmp_path: Path) -> None:
    (tmp_path / ".locks").mkdir()
    stale = tmp_path / ".locks" / "child-1-abc.lock"
    stale.write_text(json.dumps({"parent": dead_pid(), "child": dead_pid(), "scratch": ""}))
    assert reap_orphans(tmp_path) == [] and not stale.exists()


def test_two_sweeps_on_one_folder_warn_that_they_measure_each_other(tmp_path: Path) -> None:
    (tmp_path / ".locks").mkdir()
    other = subprocess.Popen([sys.executable, "-c", OTHER_SWEEP, str(tmp_path / ".locks")], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        with sweep_lock(tmp_path) as others:
            assert others() == [other.pid] == others_measuring(tmp_path)
        lines: list[str] = []

        def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
            return RunRecord(spec=spec, run_id="r1", started_at="now", status="failed", reason="stub")

        planned = [Planned(Point(RunSpec(), 0), DataInfo("synthetic", 1, 1.0, ""))]
        run_points(planned, RunOptions(out=tmp_path), report=lines.append, run=run)
        assert any("measure each other" in line and str(other.pid) in line for line in lines), lines
    finally:
        other.kill()
        other.wait()
    assert others_measuring(tmp_path) == []
    assert not (tmp_path / ".locks" / f"sweep-{other.pid}.lock").exists()


def test_no_lock_outlives_a_finished_run(tmp_path: Path) -> None:
    from vaebench.measure.process import run_child

    exit_ = run_child([sys.executable, "-c", "pass"], env=dict(os.environ), folder=tmp_path)
    assert exit_.usage.exit_code == 0
    assert list((tmp_path / ".locks").iterdir()) == []
    assert psutil.Process().num_fds() < 200
