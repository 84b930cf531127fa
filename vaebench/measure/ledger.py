"""Which job runs which point of a sweep: the plan on disk, `vaebench sweep --status`, and the
failed record of a job that died without writing its own.

Under the results folder `DIR`, every file written whole to a temporary name and renamed, each
by one writer only, so the ledger is as safe on a cluster's shared filesystem as the records:

    DIR/points/<spec_key>-<repeat>.json  the plan, one file per point: its configuration, its data,
                                         and the job it was last submitted as (the submitter writes it)
    DIR/jobs/                            submitit's folder: each job's pickles and log
    DIR/jobs/started/<job_id>.json       the job's own: host and pid from its start, then its
                                         run id and status at its end

A point's state comes from these and the records: done (an ok record), running (a job that
started and lives), pending (queued, not submitted yet, or in a local sweep not run yet), failed
(a failed record and no job in flight, or a job that is gone without a record: it gets a failed
record naming the job).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import storage
from ..result import FAILED, OK, DataInfo, RunRecord
from ..spec import RunSpec

POINTS_DIR = "points"
JOBS_DIR = "jobs"
STARTED_DIR = "started"
DONE, RUNNING, PENDING = "done", "running", "pending"
STATES = (DONE, FAILED, RUNNING, PENDING)


@dataclass(frozen=True)
class PointEntry:
    """One point of a sweep as its submitter wrote it."""

    spec: dict[str, Any]
    repeat: int
    order: int  # its place in the interleaved order: the submission order
    data: dict[str, Any] = field(default_factory=dict)
    sweep: str = ""
    executor: str = "local"
    job_id: str = ""  # empty until submitted
    submitted_at: float = math.nan  # unix time
    submit_host: str = ""
    queue_pid: int = 0  # submitit-local: the process submitting the jobs, to cancel them with

    @property
    def key(self) -> str:
        return RunSpec.from_dict(self.spec).key()

    @property
    def label(self) -> str:
        spec = RunSpec.from_dict(self.spec)
        return f"{spec.display_label()} #{self.repeat + 1}"


@dataclass(frozen=True)
class JobLife:
    """What the scheduler says of a job: alive (queued or running), gone, or not known here."""

    alive: bool | None
    state: str = ""  # the scheduler's word for it: RUNNING, PENDING, TIMEOUT, FINISHED...


Liveness = Callable[[PointEntry], JobLife]


@dataclass(frozen=True)
class PointStatus:
    entry: PointEntry
    state: str  # done, failed, running, pending
    detail: str = ""  # the run id, the reason, where and since when it runs
    host: str = ""
    lost_job: bool = False  # a job that is gone without a record: reconcile() records it


def point_path(out: Path, key: str, repeat: int) -> Path:
    return out / POINTS_DIR / f"{key}-{repeat}.json"


def write_point(out: Path, entry: PointEntry) -> None:
    storage.write_json_atomic(point_path(out, entry.key, entry.repeat), asdict(entry))


def read_points(out: Path) -> list[PointEntry]:
    """Every planned point of the folder, in submission order."""
    folder = out / POINTS_DIR
    entries = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entries.append(PointEntry(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a point of another vaebench version: its records still count
    return sorted(entries, key=lambda e: e.order)


def started_path(out: Path, job_id: str) -> Path:
    return out / JOBS_DIR / STARTED_DIR / f"{job_id}.json"


def job_started(out: Path, job_id: str, key: str, repeat: int) -> None:
    storage.write_json_atomic(started_path(out, job_id), {
        "job_id": job_id, "spec_key": key, "repeat": repeat, "host": socket.gethostname(),
        "pid": os.getpid(), "started_at": time.time(),
    })


def job_ended(out: Path, job_id: str, run_id: str, status: str) -> None:
    path = started_path(out, job_id)
    try:
        begun = json.loads(path.read_text())
    except (OSError, ValueError):
        begun = {"job_id": job_id}
    storage.write_json_atomic(path, {**begun, "ended_at": time.time(), "run_id": run_id, "status": status})


def read_jobs(out: Path) -> dict[str, dict[str, Any]]:
    folder = out / JOBS_DIR / STARTED_DIR
    jobs = {}
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            jobs[path.stem] = dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return jobs


def point_states(
    entries: Sequence[PointEntry],
    rows: Iterable[Mapping[str, Any]],
    jobs: Mapping[str, Mapping[str, Any]],
    life: Liveness,
) -> list[PointStatus]:
    """Each point's state, by the rules of the module docstring."""
    ok: dict[tuple[str, int], Mapping[str, Any]] = {}
    failed: dict[tuple[str, int], Mapping[str, Any]] = {}
    for row in rows:
        point = (str(row.get("spec_key")), int(row.get("repeat") or 0))
        (ok if row.get("status", OK) == OK else failed)[point] = row  # the latest of each
    found = []
    for entry in entries:
        point = (entry.key, entry.repeat)
        if point in ok:
            row = ok[point]
            found.append(PointStatus(entry, DONE, str(row.get("run_id", "")), str(row.get("fp_hostname") or "")))
            continue
        found.append(_unfinished(entry, failed.get(point), jobs.get(entry.job_id) if entry.job_id else None, life))
    return found


def _unfinished(
    entry: PointEntry, failure: Mapping[str, Any] | None, job: Mapping[str, Any] | None, life: Liveness
) -> PointStatus:
    reason = str(failure.get("reason", "")) if failure else ""
    if entry.job_id and job is not None and "ended_at" in job:
        if job.get("status") == OK:  # ended ok, but its record is not visible here yet
            return PointStatus(entry, RUNNING, f"ended as run {job.get('run_id')}; its record is on its way",
                               str(job.get("host", "")))
        return PointStatus(entry, FAILED, reason or f"job {entry.job_id} ended: {job.get('status')}",
                           str(job.get("host", "")))
    if entry.job_id:
        state = life(entry)
        host = str(job.get("host", "")) if job else ""
        if state.alive is False and state.state == "COMPLETED":  # a clean end: its files may lag on NFS
            return PointStatus(entry, RUNNING, "ended; its record has not reached this host's view yet", host)
        if state.alive is not False:
            unsure = "" if state.alive else " (not confirmed: the scheduler cannot be asked from here)"
            if job is not None:
                since = datetime.fromtimestamp(float(job["started_at"]), timezone.utc).strftime("%H:%M:%S UTC")
                return PointStatus(entry, RUNNING, f"on {host} since {since}{unsure}", host)
            return PointStatus(entry, PENDING, f"queued as job {entry.job_id}{unsure}")
        started = f"on {host} " if job is not None else "before it started "
        why = f"job {entry.job_id} ended {started}without a record ({state.state or 'gone'})"
        return PointStatus(entry, FAILED, why, host, lost_job=True)
    if reason:
        return PointStatus(entry, FAILED, reason)
    if entry.executor == "local":  # the sweep runs its points itself: none is ever submitted
        return PointStatus(entry, PENDING, "no record yet: not run, or stopped before it finished")
    return PointStatus(entry, PENDING, "not submitted yet")


def reconcile(out: Path, statuses: Iterable[PointStatus]) -> list[RunRecord]:
    """A failed record for every job gone without one (killed, its node lost, out of time with no
    warning), named after the job so that two reconcilers write one record."""
    written = []
    for status in statuses:
        if not status.lost_job:
            continue
        entry = status.entry
        record = RunRecord(
            spec=RunSpec.from_dict(entry.spec),
            run_id=f"job-{entry.job_id}",
            started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            status=FAILED,
            reason=status.detail,
            repeat=entry.repeat,
            sweep=entry.sweep,
            data=DataInfo(**entry.data) if entry.data else None,
            fingerprint={"hostname": status.host} if status.host else {},
        )
        if not storage.record_path(out, record.run_id).exists():
            storage.write_record(out, record)
            written.append(record)
    return written


def status_json(statuses: Sequence[PointStatus]) -> dict[str, Any]:
    """What `format_status` shows, for a script: a count per state and each point's fields."""
    points = [{"order": s.entry.order + 1, "point": s.entry.label, "spec_key": s.entry.key,
               "repeat": s.entry.repeat, "state": s.state, "job_id": s.entry.job_id or None,
               "host": s.host or None, "detail": s.detail} for s in statuses]
    return {"counts": {name: sum(s.state == name for s in statuses) for name in STATES}, "points": points}


def format_status(statuses: Sequence[PointStatus]) -> str:
    """The table `vaebench sweep --status` prints, and a count per state."""
    from .._format import text_table

    rows = [[str(s.entry.order + 1), s.entry.label, s.state, s.entry.job_id or "-", s.host or "-", s.detail]
            for s in statuses]
    counts = ", ".join(f"{sum(s.state == name for s in statuses)} {name}" for name in STATES)
    table = text_table(("#", "point", "state", "job", "host", "detail"), rows)
    return f"{table}\n{len(statuses)} points: {counts}"
