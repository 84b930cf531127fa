"""Sweeps as submitit jobs: Slurm's parameters, the refusals, the ledger's states, and the issue's
submitit-local sweep end to end (a job killed mid-way, Ctrl-C on the submitter, a rerun)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vaebench import load_runs, storage
from vaebench.cli import main
from vaebench.errors import UsageError
from vaebench.measure import cluster, ledger
from vaebench.measure.ledger import JobLife, PointEntry
from vaebench.spec import RunSpec
from vaebench.sweep import ExecutorSettings

submitit = pytest.importorskip("submitit")
ROOT = Path(__file__).resolve().parents[2]
SLURM = ExecutorSettings(kind="slurm", partition="gpu", time_min=90, max_parallel=2,
                         extra=(("account", "lab"), ("exclusive", "true"), ("mem-per-gpu", "16G")))


# --- Slurm's parameters, unit-tested: there is no cluster here --------------------------------


def test_slurm_parameters_follow_the_options_and_the_point() -> None:
    cuda = RunSpec(device="cuda", nproc_per_node=4, threads=2)
    params = cluster.slurm_parameters(SLURM, cuda)
    assert params == {"job_name": "vaebench", "time": 90, "nodes": 1, "ntasks_per_node": 1,
                      "stderr_to_stdout": True, "partition": "gpu", "gpus_per_node": 4, "cpus_per_task": 8,
                      "array_parallelism": 2, "account": "lab", "exclusive": True, "mem_per_gpu": "16G"}
    cpu = cluster.slurm_parameters(ExecutorSettings(kind="slurm", gpus_per_job=0, cpus_per_job=64), RunSpec())
    assert cpu["cpus_per_task"] == 64 and "gpus_per_node" not in cpu and "array_parallelism" not in cpu
    assert cluster.slurm_parameters(SLURM, RunSpec(nnodes=2, nproc_per_node=8, device="cuda"))["nodes"] == 2


def test_the_parameters_make_the_sbatch_script_submitit_would_submit(tmp_path: Path) -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    params = cluster.slurm_parameters(SLURM, RunSpec(device="cuda", nproc_per_node=2))
    script = _make_sbatch_string(command="python -m x", folder=tmp_path, map_count=4, **params)
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --account=lab", "#SBATCH --exclusive",
                 "#SBATCH --mem-per-gpu=16G", "#SBATCH --signal=USR2@90"):
        assert line in script, line


def test_unknown_slurm_extra_keys_are_refused_with_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown --slurm-extra key 'colour'.*partition"):
        cluster.slurm_parameters(ExecutorSettings(kind="slurm", extra=(("colour", "red"),)), RunSpec())


def test_jobs_that_crowd_one_machine_are_named() -> None:
    entries = [PointEntry(spec=RunSpec(threads=t).to_dict(), repeat=0, order=i) for i, t in enumerate((1, 2))]
    local = ExecutorSettings(kind="submitit-local")
    assert "2 jobs at once x up to 2 threads each on 2 cores" in cluster.crowding(entries, local, cores=2)
    assert cluster.crowding(entries, local, cores=4) == ""
    assert cluster.crowding(entries, ExecutorSettings(kind="submitit-local", max_parallel=1), cores=2) == ""


def test_slurm_cpu_jobs_that_leave_threads_and_cpus_unset_are_named() -> None:
    entries = [PointEntry(spec=RunSpec(threads=t).to_dict(), repeat=0, order=i) for i, t in enumerate((None, 4))]
    slurm = ExecutorSettings(kind="slurm")
    assert cluster.unsized(entries, slurm).startswith("1 CPU job leaves --threads to torch")
    assert cluster.slurm_parameters(slurm, RunSpec(threads=4))["cpus_per_task"] == 4  # sized: no warning due
    assert cluster.unsized(entries[1:], slurm) == ""
    assert cluster.unsized(entries, ExecutorSettings(kind="slurm", cpus_per_job=8)) == ""
    assert cluster.unsized(entries, ExecutorSettings(kind="submitit-local")) == ""
    gpu = [PointEntry(spec=RunSpec(device="cuda").to_dict(), repeat=0, order=0)]
    assert cluster.unsized(gpu, slurm) == ""


# --- refusals before anything is submitted ------------------------------------------------------

SWEEP = ["sweep", "--threads", "1", "--data", "synthetic", "--samples", "256", "--steps", "2"]


def test_slurm_without_sbatch_points_to_submitit_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    assert main([*SWEEP, "--executor", "slurm", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "sbatch" in err and "--executor submitit-local" in err
    assert not (tmp_path / "d").exists()


def test_unknown_slurm_extra_exits_2_before_submitting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_slurm(tmp_path, monkeypatch, "exit 1")
    assert main([*SWEEP, "--executor", "slurm", "--slurm-extra", "colour=red", "--out", str(tmp_path / "d")]) == 2
    assert "unknown --slurm-extra key 'colour'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def fake_slurm(folder: Path, monkeypatch: pytest.MonkeyPatch, sbatch: str,
               tools: tuple[str, ...] = ("sbatch", "srun")) -> None:
    """Slurm's commands as shell scripts first on the PATH; `sbatch` is the body of its script."""
    for tool in tools:
        (folder / tool).write_text(f"#!/bin/sh\n{sbatch if tool == 'sbatch' else 'exit 0'}\n")
        (folder / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_slurm_without_srun_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_slurm(tmp_path, monkeypatch, "exit 1", tools=("sbatch",))
    monkeypatch.setenv("PATH", str(tmp_path))  # sbatch, and nothing else
    assert main([*SWEEP, "--executor", "slurm", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "needs Slurm's srun" in err and err.count("\n") == 1


def test_a_job_sbatch_refuses_is_its_message_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    fake_slurm(tmp_path, monkeypatch, f"echo '{refusal}' >&2; exit 1")
    assert main([*SWEEP, "--executor", "slurm", "--slurm-partition", "nope", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert f"sbatch refused the jobs: {refusal}" in err and "Traceback" not in err


def test_missing_submitit_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    assert main([*SWEEP, "--executor", "submitit-local", "--out", str(tmp_path)]) == 2
    assert "pip install 'vaebench[slurm]'" in capsys.readouterr().err


def test_slurm_only_options_under_submitit_local_are_noted_as_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit")
    argv = [*SWEEP, "--executor", "submitit-local", "--dry-run", "--out", str(tmp_path)]
    assert main([*argv, "--slurm-partition", "a100", "--slurm-time", "30"]) == 0
    err = capsys.readouterr().err
    assert "ignores --slurm-partition, which applies under --executor slurm" in err
    assert "--slurm-time" not in err  # its time limit holds for local jobs too
    assert main(argv) == 0 and "ignores" not in capsys.readouterr().err


def test_status_of_a_folder_without_a_sweep_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--status", str(tmp_path)]) == 2
    assert "no sweep plan" in capsys.readouterr().err
    assert main(["sweep", "--status", str(tmp_path / "nope")]) == 2
    assert "nope: no such results folder" in capsys.readouterr().err


def test_stop_signals_become_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(cluster.JobStopped, match="stopped by SIGTERM: the job was cancelled or preempted"):
        with cluster.stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    with pytest.raises(cluster.JobStopped, match="SIGUSR2: Slurm's warning"):
        with cluster.stop_signals():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back


# --- the ledger's states, on made-up folders ----------------------------------------------------


def _entry(order: int, job_id: str = "", executor: str = "slurm", **spec: Any) -> PointEntry:
    return PointEntry(spec=RunSpec(threads=order + 1, **spec).to_dict(), repeat=0, order=order,
                      job_id=job_id, executor=executor, submitted_at=1.0 if job_id else math.nan)


def test_each_point_is_done_failed_running_or_pending() -> None:
    points = [_entry(0, "10_0"), _entry(1, "10_1"), _entry(2, "10_2"), _entry(3, "10_3"), _entry(4), _entry(5),
              _entry(6, "10_6")]
    rows = [
        {"run_id": "r0", "spec_key": points[0].key, "repeat": 0, "status": "ok", "fp_hostname": "n1"},
        {"run_id": "r5", "spec_key": points[5].key, "repeat": 0, "status": "failed", "reason": "out of memory"},
        {"run_id": "r6", "spec_key": points[6].key, "repeat": 0, "status": "failed", "reason": "old failure"},
    ]
    jobs = {"10_0": {"host": "n1", "started_at": 0.0, "ended_at": 5.0, "status": "ok"},
            "10_1": {"host": "n2", "started_at": 0.0},
            "10_3": {"host": "n3", "started_at": 0.0}}
    life = {"10_1": JobLife(True, "RUNNING"), "10_2": JobLife(True, "PENDING"), "10_3": JobLife(False, "NODE_FAIL"),
            "10_6": JobLife(True, "PENDING")}
    states = ledger.point_states(points, rows, jobs, lambda e: life.get(e.job_id, JobLife(None)))
    assert [s.state for s in states] == ["done", "running", "pending", "failed", "pending", "failed", "pending"]
    assert states[0].detail == "r0" and states[0].host == "n1"
    assert states[1].detail.startswith("on n2 since")
    assert states[2].detail == "queued as job 10_2"
    assert states[3].lost_job and states[3].detail == "job 10_3 ended on n3 without a record (NODE_FAIL)"
    assert states[4].detail == "not submitted yet"
    (local,) = ledger.point_states([_entry(7, executor="local")], [], {}, lambda e: JobLife(None))
    assert (local.state, local.detail) == ("pending", "no record yet: not run, or stopped before it finished")
    assert states[5].detail == "out of memory"
    assert states[6].detail == "queued as job 10_6"  # resubmitted: the old failure is not its state
    text = ledger.format_status(states)
    assert "7 points: 1 done, 2 failed, 1 running, 3 pending" in text and "10_3" in text


def test_a_cleanly_ended_job_waits_for_its_record_instead_of_failing() -> None:
    states = ledger.point_states([_entry(0, "7")], [], {"7": {"host": "n", "started_at": 0.0}},
                                 lambda e: JobLife(False, "COMPLETED"))
    assert states[0].state == "running" and not states[0].lost_job


def test_a_lost_job_gets_one_failed_record(tmp_path: Path) -> None:
    entry = _entry(0, "42", data="synthetic")
    lost = ledger.point_states([entry], [], {}, lambda e: JobLife(False, "CANCELLED"))
    for _ in range(2):  # the follower and the queue may both see it
        ledger.reconcile(tmp_path, lost)
    rows = storage.read_rows(tmp_path)
    assert len(rows) == 1 and rows[0]["run_id"] == "job-42" and rows[0]["status"] == "failed"
    assert rows[0]["reason"] == "job 42 ended before it started without a record (CANCELLED)"
    assert storage.done_keys(tmp_path) == set()  # so a rerun submits it again


# --- the sweep, with fewer steps ------------------------------------------------------------

GRID = ["--executor", "submitit-local", "--threads", "1,2", "--batch-size", "128,256", "--steps", "15",
        "--data", "embedded"]


def _wait(what: str, ready: Any, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ready()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_follower_says_the_jobs_keep_running_and_how_to_cancel_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, signum: int, status: int
) -> None:
    from types import SimpleNamespace

    from vaebench.errors import Interrupted

    def stop(*_: object) -> None:
        raise KeyboardInterrupt if signum == signal.SIGINT else Interrupted(signum)

    monkeypatch.setattr(cluster, "submit", lambda *_: SimpleNamespace(cancel="kill 4242"))
    monkeypatch.setattr(cluster, "follow", stop)
    assert main(["sweep", *GRID, "--out", str(tmp_path / "d")]) == status
    err = capsys.readouterr().err
    assert "the jobs keep running" in err and "cancel them with `kill 4242`" in err


def test_a_submitit_local_sweep_survives_a_killed_job_and_ctrl_c_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d"
    argv = [sys.executable, "-m", "vaebench.cli", "sweep", *GRID, "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started = out / "jobs" / "started"
    # Kill the first job to start while it trains: SIGKILL, so it writes nothing.
    first = _wait("a job to start", lambda: sorted(started.glob("*.json")) if started.is_dir() else [])[0]
    job = json.loads(first.read_text())
    time.sleep(2.0)  # into its run
    os.kill(job["pid"], signal.SIGKILL)
    # Ctrl-C on the submitting command once a run is in: it stops following, the jobs go on.
    _wait("a record", lambda: storage.has_results(out))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "the jobs keep running" in stderr and f"vaebench sweep --status {out}" in stderr and "kill " in stderr
    assert "4 jobs through submitit-local, 2 at a time" in stdout

    def finished() -> list[ledger.PointStatus] | None:
        states = cluster.status(out)
        return states if all(s.state in ("done", "failed") for s in states) else None

    states = _wait("the queue to finish the jobs", finished)
    assert [s.state for s in states].count("done") == 3
    killed = next(s for s in states if s.state == "failed")
    assert killed.entry.job_id == job["job_id"] and "without a record" in killed.detail
    entries = ledger.read_points(out)
    assert [e.order for e in sorted(entries, key=lambda e: e.submitted_at)] == [0, 1, 2, 3]  # interleaved order
    jobs = ledger.read_jobs(out)
    firsts = [jobs[e.job_id] for e in entries[:2]]
    assert firsts[1]["started_at"] < firsts[0].get("ended_at", math.inf)  # two at a time
    assert _most_at_once(jobs.values()) <= 2

    # Rerun: only the killed point is submitted, and the sweep completes.
    capsys.readouterr()
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    assert "1 job through submitit-local" in capsys.readouterr().out
    assert not (out / "jobs" / "%j").exists()  # submitit's folder template, made literally by its controller
    runs = load_runs(str(out))
    assert sorted(runs["status"]) == ["failed", "ok", "ok", "ok", "ok"]
    assert runs[runs["status"] == "ok"]["spec_key"].nunique() == 4
    assert main(["sweep", "--status", str(out)]) == 0
    assert "4 points: 4 done, 0 failed, 0 running, 0 pending" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").exists()


def _most_at_once(jobs: Any) -> int:
    spans = [(j["started_at"], j["ended_at"]) for j in jobs if "ended_at" in j]
    return max((sum(a <= t < b for a, b in spans) for t, _ in spans), default=0)
