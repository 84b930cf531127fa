"""Sweeps as jobs through submitit: a Slurm job array, or submitit's local executor to try one.

Every point of the sweep (a configuration x a repeat) is one job that runs exactly the measured
run of `vaebench run` on its node (`run.run_once`: a fresh child, the rusage of its tree, the
outside monitor, the node's own fingerprint) and writes its record as a file of its own
(`storage.write_record`): the results folder lives on a filesystem many hosts write at once.
The interleaved order of the sweep is the submission order.

Slurm limits an array's parallelism itself (`--array=0-N%P`). submitit's local executor starts
every job it is given at once, so for it a small queue process (`python -m
vaebench.measure.cluster QUEUE.json`) hands the jobs out P at a time. The queue and its jobs run
in a session of their own: Ctrl-C on the submitting command stops the following, not the jobs.

A job stopped by its scheduler (Slurm's USR2 warning before a time limit or a preemption,
scancel's SIGTERM, submitit-local's cancel as SIGINT) kills its training child and writes a
failed record with the reason; a job that dies without a word (SIGKILL, a lost node) gets one
from `ledger.reconcile`. Nothing is requeued: a measured run restarted half-way would not be a
measurement, and rerunning the sweep submits again every point without an ok record.

submitit is imported here only, inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import storage
from .._format import counted
from ..errors import UsageError, signals_raise
from ..machine import host_fingerprint
from ..result import FAILED, DataInfo, RunRecord
from ..spec import RunSpec
from ..sweep import ExecutorSettings
from . import ledger
from .child_env import child_process_env
from .execution import Planned
from .launch import Launch
from .ledger import DONE, JOBS_DIR, JobLife, Liveness, PointEntry, PointStatus
from .run import RunOptions, new_run_id, run_once

INSTALL = "pip install 'vaebench[slurm]'"
RDZV_PORT = 29400  # multi-node jobs: node 0's rendezvous port, plus the job's last digits
SLURM_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "READY"}
POLL_S = 1.0


class JobStopped(Exception):
    """The scheduler told the job to stop; the message says which signal and what it means."""


def require_submitit(kind: str) -> ModuleType:
    try:
        import submitit
    except ImportError:
        raise UsageError(f"--executor {kind} needs submitit, which is not installed: {INSTALL}") from None
    return submitit


def check(settings: ExecutorSettings) -> None:
    """Refuse, before anything is submitted: submitit missing, no sbatch, unknown Slurm parameters."""
    require_submitit(settings.kind)
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if settings.kind == "slurm" and missing:
        raise UsageError(f"--executor slurm needs Slurm's {' and '.join(missing)}, not on this machine's PATH; "
                         "to try the same jobs here, use --executor submitit-local")
    slurm_parameters(settings, RunSpec())


def slurm_parameters(settings: ExecutorSettings, spec: RunSpec) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for the jobs of `spec`; raises UsageError on an unknown
    --slurm-extra key. One task per node; nodes and GPUs follow the spec's ranks unless given."""
    submitit = require_submitit(settings.kind)
    valid = submitit.SlurmExecutor._valid_parameters()
    params: dict[str, Any] = {
        "job_name": "vaebench",
        "time": settings.time_min,
        "nodes": spec.nnodes,
        "ntasks_per_node": 1,
        "stderr_to_stdout": True,
    }
    if settings.partition:
        params["partition"] = settings.partition
    gpus = _gpus(settings, spec)
    if gpus:
        params["gpus_per_node"] = gpus
    cpus = _cpus(settings, spec)
    if cpus:
        params["cpus_per_task"] = cpus
    if settings.parallel() is not None:
        params["array_parallelism"] = settings.parallel()
    for key, value in settings.extra:
        name = key.replace("-", "_")
        if name not in valid:
            raise UsageError(f"unknown --slurm-extra key {key!r}; submitit's Slurm parameters are: "
                             f"{', '.join(sorted(valid))}")
        params[name] = _typed(value)
    return params


def local_parameters(settings: ExecutorSettings, spec: RunSpec) -> dict[str, Any]:
    """submitit's LocalExecutor parameters: the time limit and the GPUs it makes visible."""
    return {"timeout_min": settings.time_min, "gpus_per_node": _gpus(settings, spec), "stderr_to_stdout": True}


def _gpus(settings: ExecutorSettings, spec: RunSpec) -> int:
    if settings.gpus_per_job is not None:
        return settings.gpus_per_job
    return spec.nproc_per_node if spec.is_cuda else 0


def _cpus(settings: ExecutorSettings, spec: RunSpec) -> int | None:
    if settings.cpus_per_job is not None:
        return settings.cpus_per_job
    return spec.threads * spec.nproc_per_node if spec.threads is not None else None


def _typed(value: str) -> Any:
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return {"true": True, "false": False}.get(value.lower(), value)


# The job --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointJob:
    """One point as a submitit job: the measured run on the node that runs it (module docstring)."""

    out: str
    entry: dict[str, Any]  # a ledger.PointEntry
    timeout: float | None = None
    sample_hz: float = 10.0

    def __call__(self) -> dict[str, str]:
        import submitit

        env = submitit.JobEnvironment()
        entry = PointEntry(**self.entry)
        spec, data, out = RunSpec.from_dict(entry.spec), DataInfo(**entry.data), Path(self.out)
        launch = _launch(env, spec)
        lead = launch.node_rank == 0  # the node of rank 0 speaks for the job
        if lead:
            ledger.job_started(out, env.job_id, entry.key, entry.repeat)
            if (entry.key, entry.repeat) in storage.done_keys(out):
                ledger.job_ended(out, env.job_id, "", "skipped: already done")
                return {"status": "skipped"}
        options = RunOptions(out=out, timeout=self.timeout, sample_hz=self.sample_hz, sweep=entry.sweep,
                             repeat=entry.repeat, label=f"[job {env.job_id}]", launch=launch, shared=True)
        try:
            with stop_signals():
                record = run_once(spec, data, options)
        except (JobStopped, KeyboardInterrupt) as exc:
            why = str(exc) if isinstance(exc, JobStopped) else "stopped by SIGINT: the job was cancelled"
            record = stopped_record(spec, data, options, f"{why} (job {env.job_id})")
            if lead:
                storage.write_record(out, record)
        if lead:
            ledger.job_ended(out, env.job_id, record.run_id, record.status)
        return {"run_id": record.run_id, "status": record.status}


def _launch(env: Any, spec: RunSpec) -> Launch:
    """A multi-node job: this node's rank, and node 0's host as the rendezvous (untested on hardware)."""
    if spec.nnodes == 1:
        return Launch()
    digits = re.sub(r"\D", "", str(env.job_id))[-3:] or "0"
    return Launch(node_rank=int(env.node), rdzv_endpoint=f"{env.hostnames[0]}:{RDZV_PORT + int(digits)}")


SIGNAL_MEANINGS = {
    "SIGUSR2": "Slurm's warning before the job's time limit or a preemption",
    "SIGTERM": "the job was cancelled or preempted (scancel, or the time limit reached)",
}


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While a job runs: the scheduler's stop signals raise JobStopped in place of submitit's
    handlers (which would requeue, or exit without a record)."""
    names = {"SIGTERM", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")}
    signums = [getattr(signal, name) for name in names if hasattr(signal, name)]

    def stopped(signum: int) -> JobStopped:
        name = signal.Signals(signum).name
        return JobStopped(f"stopped by {name}: {SIGNAL_MEANINGS.get(name, 'a signal from the scheduler')}")

    with signals_raise(signums, stopped):
        yield


def stopped_record(spec: RunSpec, data: DataInfo, options: RunOptions, reason: str) -> RunRecord:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return RunRecord(spec=spec, run_id=new_run_id(), started_at=started, status=FAILED, reason=reason,
                     repeat=options.repeat, sweep=options.sweep, data=data, fingerprint=host_fingerprint())


# Submitting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    entries: list[PointEntry]  # the points this command submitted (job ids filled in later for a queue)
    cancel: str  # how to cancel them, as a command line
    queue_pid: int = 0


def plan(out: Path, planned: Sequence[Planned], sweep: str, executor: str, todo: Sequence[Planned]) -> list[PointEntry]:
    """Write the sweep's plan into the ledger: every point, in the interleaved order. Points about
    to be submitted lose their old job id; the others keep theirs. Returns the entries of `todo`."""
    existing = {(e.key, e.repeat): e for e in ledger.read_points(out)}
    submitting = {(p.point.spec.key(), p.point.repeat) for p in todo}
    entries = []
    for order, item in enumerate(planned):
        point = (item.point.spec.key(), item.point.repeat)
        old = existing.get(point)
        entry = PointEntry(spec=item.point.spec.to_dict(), repeat=item.point.repeat, order=order,
                           data=dataclasses.asdict(item.data), sweep=sweep, executor=executor)
        if old is not None and point not in submitting:
            entry = dataclasses.replace(entry, job_id=old.job_id, submitted_at=old.submitted_at,
                                        submit_host=old.submit_host, queue_pid=old.queue_pid, executor=old.executor)
        ledger.write_point(out, entry)
        entries.append(entry)
    return [e for e in entries if (e.key, e.repeat) in submitting]


def in_flight(out: Path, todo: Sequence[Planned]) -> set[tuple[str, int]]:
    """Points of `todo` that a job already runs or waits for: a second sweep leaves them to it.
    A job found gone without a record gets its failed record on the way."""
    wanted = {(p.point.spec.key(), p.point.repeat) for p in todo}
    entries = [e for e in ledger.read_points(out) if (e.key, e.repeat) in wanted and e.job_id]
    states, _ = _states(out, entries)
    ledger.reconcile(out, states)
    return {(s.entry.key, s.entry.repeat) for s in states if s.state in (ledger.RUNNING, ledger.PENDING)}


def crowding(entries: Sequence[PointEntry], settings: ExecutorSettings, cores: int | None = None) -> str:
    """submitit-local: a warning when the jobs at once want more threads than this machine has cores
    (they would time each other, not the configuration); empty when they fit."""
    if settings.kind != "submitit-local" or not entries:
        return ""
    cores = cores or os.cpu_count() or 1
    specs = [RunSpec.from_dict(e.spec) for e in entries]
    widest = max((s.threads or cores) * s.world_size for s in specs)
    jobs = min(settings.parallel() or len(entries), len(entries))
    if jobs < 2 or jobs * widest <= cores:
        return ""
    return (f"{jobs} jobs at once x up to {widest} threads each on {cores} cores: the runs will slow each other "
            "down; use --max-parallel 1 for timings that stand on their own")


def unsized(entries: Sequence[PointEntry], settings: ExecutorSettings) -> str:
    """slurm: a warning when CPU jobs leave their threads to torch and their CPUs to Slurm, whose
    default is often one CPU a task: torch then trains on what the job got, not on a node's cores."""
    if settings.kind != "slurm" or settings.cpus_per_job is not None:
        return ""
    specs = [RunSpec.from_dict(e.spec) for e in entries]
    loose = [s for s in specs if s.device == "cpu" and s.threads is None]
    if not loose:
        return ""
    leave = "leaves" if len(loose) == 1 else "leave"
    return (f"{counted(len(loose), 'CPU job')} {leave} --threads to torch: each asks Slurm for its default CPUs per "
            "task (often 1), and torch uses as many threads as the job gets; set --threads (the job then asks for "
            "that many CPUs) or --slurm-cpus-per-job")


def submit(out: Path, entries: Sequence[PointEntry], settings: ExecutorSettings, options: RunOptions) -> Submitted:
    if settings.kind == "slurm":
        return _submit_slurm(out, entries, settings, options)
    return _start_queue(out, entries, settings, options)


def _job(out: Path, entry: PointEntry, options: RunOptions) -> PointJob:
    return PointJob(str(out), dataclasses.asdict(entry), options.timeout, options.sample_hz)


def _submit_slurm(out: Path, entries: Sequence[PointEntry], settings: ExecutorSettings,
                  options: RunOptions) -> Submitted:
    """One job array per set of resources (most sweeps: one), each in the sweep's order."""
    submitit = require_submitit(settings.kind)
    executor = submitit.SlurmExecutor(folder=str(out / JOBS_DIR / "%j"))
    groups: dict[str, list[PointEntry]] = {}
    for entry in entries:
        params = slurm_parameters(settings, RunSpec.from_dict(entry.spec))
        groups.setdefault(json.dumps(params, sort_keys=True), []).append(entry)
    submitted: list[PointEntry] = []
    arrays: list[str] = []
    for params_text, members in groups.items():
        executor.update_parameters(**json.loads(params_text))
        try:
            jobs = executor.submit_array([_job(out, entry, options) for entry in members])
        except submitit.core.utils.FailedJobError as exc:
            raise UsageError(_refused(exc, arrays)) from None
        now = time.time()
        for job, entry in zip(jobs, members, strict=True):
            entry = dataclasses.replace(entry, job_id=str(job.job_id), submitted_at=now,
                                        submit_host=socket.gethostname())
            ledger.write_point(out, entry)
            submitted.append(entry)
        arrays.append(str(jobs[0].job_id).split("_")[0])
    return Submitted(submitted, f"scancel {' '.join(dict.fromkeys(arrays))}")


def _refused(exc: Exception, arrays: Sequence[str]) -> str:
    """sbatch's own complaint (a wrong partition, account or QOS, most often), in one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "no message")
    before = f"; the arrays already submitted keep running: scancel {' '.join(arrays)}" if arrays else ""
    return f"sbatch refused the jobs: {said}{before}"


def _start_queue(out: Path, entries: Sequence[PointEntry], settings: ExecutorSettings,
                 options: RunOptions) -> Submitted:
    """submitit-local: a queue process in a session of its own hands the jobs out (module docstring)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
    queue = out / JOBS_DIR / f"queue-{stamp}.json"
    storage.write_json_atomic(queue, {
        "out": str(out), "settings": dataclasses.asdict(settings), "timeout": options.timeout,
        "sample_hz": options.sample_hz, "points": [dataclasses.asdict(e) for e in entries],
    })
    with open(queue.with_suffix(".log"), "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vaebench.measure.cluster", str(queue)],
                                env=child_process_env(None), start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return Submitted(list(entries), f"kill {proc.pid}", queue_pid=proc.pid)


def run_queue(path: Path) -> int:
    """The submitit-local queue: submit in order, at most `parallel` jobs at once, record lost jobs,
    and on SIGTERM or SIGINT cancel the running jobs (they record themselves as cancelled)."""
    submitit = require_submitit("submitit-local")
    request = json.loads(path.read_text())
    out = Path(request["out"])
    settings = ExecutorSettings(**{**request["settings"], "extra": tuple(map(tuple, request["settings"]["extra"]))})
    options = RunOptions(out=out, timeout=request["timeout"], sample_hz=request["sample_hz"])
    waiting = [PointEntry(**e) for e in request["points"]]
    executor = submitit.LocalExecutor(folder=str(out / JOBS_DIR / "%j"))
    stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: stop.append(signum))
    running: dict[str, tuple[Any, PointEntry]] = {}
    limit = settings.parallel() or len(waiting) or 1
    while (waiting or running) and not stop:
        while waiting and len(running) < limit and not stop:
            entry = waiting.pop(0)
            executor.update_parameters(**local_parameters(settings, RunSpec.from_dict(entry.spec)))
            job = executor.submit(_job(out, entry, options))
            entry = dataclasses.replace(entry, job_id=str(job.job_id), submitted_at=time.time(),
                                        submit_host=socket.gethostname(), queue_pid=os.getpid())
            ledger.write_point(out, entry)
            running[entry.job_id] = (job, entry)
            print(f"submitted {entry.label} as job {entry.job_id}", flush=True)
        for job_id, (job, entry) in list(running.items()):
            if job.done():
                del running[job_id]
                _record_if_lost(out, entry, JobLife(False, str(job.state)))
        time.sleep(0.2)
    if stop:
        name = signal.Signals(stop[0]).name
        print(f"stopped by {name}: cancelling {counted(len(running), 'running job')}", flush=True)
        for job, _ in running.values():
            job.cancel()
        deadline = time.monotonic() + 30
        while running and time.monotonic() < deadline:
            for job_id, (job, entry) in list(running.items()):
                if job.done():
                    del running[job_id]
                    _record_if_lost(out, entry, JobLife(False, "CANCELLED"))
            time.sleep(0.2)
    drop_template_folder(out)
    return 0


def drop_template_folder(out: Path) -> None:
    """submitit-local's job controller makes its folder template (`jobs/%j`) as a literal, empty
    folder beside the jobs' own; once no job is starting, it is removed."""
    with contextlib.suppress(OSError):
        (out / JOBS_DIR / "%j").rmdir()


def _record_if_lost(out: Path, entry: PointEntry, life: JobLife) -> None:
    jobs = ledger.read_jobs(out)  # after the job ended: what it wrote before its end is visible
    if ledger.reconcile(out, ledger.point_states([entry], storage.rows_if_any(out), jobs, lambda _: life)):
        print(f"job {entry.job_id} ({entry.label}) ended without a record: recorded as failed", flush=True)


# Following and status ---------------------------------------------------------------------------


def liveness(out: Path) -> Liveness:
    """How to ask whether a point's job lives: submitit-local by its controller's process on this
    host, Slurm through submitit (sacct), a local sweep by its point's lock."""
    cache: dict[str, JobLife] = {}

    def life(entry: PointEntry) -> JobLife:
        if entry.job_id not in cache:
            cache[entry.job_id] = _life(out, entry)
        return cache[entry.job_id]

    return life


def _life(out: Path, entry: PointEntry) -> JobLife:
    if entry.executor == "submitit-local":
        if entry.submit_host != socket.gethostname():
            return JobLife(None)
        return JobLife(_controller_alive(int(entry.job_id)), "")
    if entry.executor == "slurm":
        try:
            submitit = require_submitit("slurm")
            state = str(submitit.SlurmJob(folder=str(out / JOBS_DIR / "%j"), job_id=entry.job_id).state)
        except Exception:  # noqa: BLE001 - no submitit or no sacct here: not known
            return JobLife(None)
        base = state.split()[0].upper() if state else "UNKNOWN"
        return JobLife(None if base == "UNKNOWN" else base in SLURM_ALIVE, base)
    return JobLife(None)


def _controller_alive(pid: int) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and "submitit" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def status(out: Path) -> list[PointStatus]:
    """Every planned point of the folder with its state; `ledger.point_states` has the rules. A local
    sweep's point runs while another process holds its claim."""
    entries = ledger.read_points(out)
    return [_claimed(out, s) for s in _states(out, entries)[0]]


def _states(out: Path, entries: Sequence[PointEntry]) -> tuple[list[PointStatus], list[dict[str, Any]]]:
    """Each point's state, and the records it was read from. The scheduler is asked first, the
    files read after: a job seen gone has written all it will."""
    life = liveness(out)
    for entry in entries:
        if entry.job_id:
            life(entry)
    jobs = ledger.read_jobs(out)
    rows = storage.rows_if_any(out)
    return ledger.point_states(entries, rows, jobs, life), rows


def _claimed(out: Path, state: PointStatus) -> PointStatus:
    if state.entry.executor != "local" or state.state in (DONE, ledger.RUNNING):
        return state
    with storage.claim(out, state.entry.key, state.entry.repeat) as mine:
        held = not mine
    return dataclasses.replace(state, state=ledger.RUNNING, detail="by a local sweep") if held else state


@dataclass
class Followed:
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # what finished, in order
    unsubmitted: int = 0  # points the queue never submitted (it was stopped)

    @property
    def failed(self) -> int:
        return sum(row.get("status") != "ok" for row in self.rows)


def follow(out: Path, submitted: Submitted, *, report: Callable[[str], None] = print,
           poll_s: float = POLL_S, clock: Callable[[], float] = time.monotonic) -> Followed:
    """Report each submitted point as its record arrives, until every one has finished; records the
    jobs that die without one (Slurm: through sacct; submitit-local: the queue does it)."""
    keys = [(e.key, e.repeat) for e in submitted.entries]
    since = min((e.submitted_at for e in submitted.entries if not math.isnan(e.submitted_at)), default=time.time())
    since = min(since, time.time()) - 1.0
    followed, seen = Followed(), set()
    start = clock()
    while True:
        entries = {(e.key, e.repeat): e for e in ledger.read_points(out)}
        current = [entries[k] for k in keys if k in entries]
        states, rows = _states(out, current)
        if any(e.executor == "slurm" for e in current) and ledger.reconcile(out, states):
            rows = storage.rows_if_any(out)  # with the failed records of the jobs just found lost
        by_id = {str(r.get("run_id")): r for r in rows}
        queue_gone = bool(submitted.queue_pid) and not _alive(submitted.queue_pid)
        unfinished = 0
        for state in states:
            point = (state.entry.key, state.entry.repeat)
            mine = bool(state.entry.job_id) and state.entry.submitted_at >= since
            if point in seen:
                continue
            if mine and state.state in (DONE, FAILED):
                seen.add(point)
                row = by_id.get(state.detail) or _latest(rows, point) or {"status": state.state, "reason": state.detail}
                followed.rows.append(row)
                report(_line(len(seen), len(keys), state.entry, row, clock() - start))
            elif not state.entry.job_id and queue_gone:
                seen.add(point)
                followed.unsubmitted += 1
            else:
                unfinished += 1
        if not unfinished:
            drop_template_folder(out)
            return followed
        time.sleep(poll_s)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, exited: reap it
            return False
    return True


def _latest(rows: Sequence[Mapping[str, Any]], point: tuple[str, int]) -> dict[str, Any] | None:
    found = [r for r in rows if (r.get("spec_key"), int(r.get("repeat") or 0)) == point]
    return dict(found[-1]) if found else None


def _line(index: int, total: int, entry: PointEntry, row: Mapping[str, Any], elapsed: float) -> str:
    from .._format import format_duration

    head = f"[{index}/{total}] {entry.label} (job {entry.job_id}"
    head += f" on {row['fp_hostname']})" if row.get("fp_hostname") else ")"
    if row.get("status") != "ok":
        return f"{head}: FAILED: {row.get('reason', '')}  ({format_duration(elapsed)} elapsed)"
    rate = row.get("samples_per_s")
    return (f"{head}: real {row.get('real_s', math.nan):.2f} s, user {row.get('user_s', math.nan):.2f} s, "
            f"sys {row.get('sys_s', math.nan):.2f} s, {'n/a' if rate is None else f'{rate:.0f}'} samples/s, "
            f"loss {row.get('final_loss') or math.nan:.2f}  ({format_duration(elapsed)} elapsed)")


def main(argv: Sequence[str]) -> int:
    """`python -m vaebench.measure.cluster QUEUE.json`: the submitit-local queue (`run_queue`)."""
    return run_queue(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
