"""The results folder on disk: append-only `runs.jsonl`, raw series beside it, read back as tables.

Layout of a results folder `DIR`:

    DIR/runs.jsonl             one JSON record per line, appended under an exclusive lock
    DIR/records/<run_id>.json  one JSON record per file: runs of jobs on a cluster's shared filesystem
    DIR/series/<run_id>.json   every step time and the outside monitor's samples
    DIR/samples/<run_id>.png   64 digits sampled from the trained model

Appends are a single `write` of a whole line on an `O_APPEND` descriptor under `flock`, so
two sweeps writing into one folder cannot interleave, and a crash leaves at worst a torn
last line, which readers report by number and writers step past.

Jobs on many hosts share a folder over NFS, where neither `O_APPEND` nor `flock` is coherent
between clients. They write one file per run instead: to a unique temporary name in the same
folder, flushed, then renamed, which the NFS server does atomically. A run id names one run
only, so no two writers ever touch one file; a reader sees a record whole or not at all.
Readers merge `runs.jsonl` and `records/`, each run id once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import UsageError, VaebenchError
from .result import COLUMN_TYPES, OK, RunRecord, RunSeries, last_epoch_cut_short, record_problem, run_id_problem
from .rules import scaling_efficiency, single_rank_rates
from .spec import SPEC_FIELDS, RunSpec
from .stats import finite, median, number

if TYPE_CHECKING:
    import pandas as pd

RUNS_FILE = "runs.jsonl"
RECORDS_DIR = "records"
SERIES_DIR = "series"
SAMPLES_DIR = "samples"
LOCKS_DIR = ".locks"  # flock files: claimed sweep points, running sweeps and children (measure.occupants)


class NoResults(UsageError, FileNotFoundError):
    """No results where a folder of them was expected."""


class UnreadableResults(UsageError):
    """A results file that is there but cannot be read: a folder where a file belongs, no permission."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"{path}: cannot be read ({exc.strerror or exc})")


class NotSaved(VaebenchError):
    """A finished run whose record could not be written: a full disk, a folder that went read-only."""

    lost: RunRecord | None = None  # the record itself, where the writer had it, to show what was measured

    @classmethod
    def record(cls, path: Path, exc: OSError, lost: RunRecord | None = None) -> NotSaved:
        error = cls(f"{path}: the run's record could not be written ({exc.strerror or exc}), so the run is lost")
        error.lost = lost
        return error


class CorruptResults(UsageError):
    """A line of runs.jsonl that is not a record; nothing is changed on disk."""

    def __init__(self, path: Path, line_no: int, detail: str) -> None:
        super().__init__(
            f"{path}:{line_no}: not a valid record ({detail}); the file was left as it is: "
            + (f"fix or delete line {line_no} to go on" if line_no > 1 else
               "if it is not vaebench's, give another results folder; if it is, fix or delete line 1 to go on")
        )
        self.path = path
        self.line_no = line_no


def runs_path(folder: str | os.PathLike[str]) -> Path:
    path = Path(folder)
    return path if path.name == RUNS_FILE else path / RUNS_FILE


def has_results(folder: str | os.PathLike[str]) -> bool:
    """Whether the folder holds any record, in runs.jsonl or in records/."""
    return _runs_file_there(runs_path(folder)) or bool(_record_files(folder))


def _runs_file_there(path: Path) -> bool:
    """runs.jsonl is there, and not as the empty file a folder's first append leaves where it
    fails (a full disk): `append_row` creates the file before it writes, and an empty one holds
    no record."""
    return path.exists() and not (path.is_file() and path.stat().st_size == 0)


def append(folder: str | os.PathLike[str], record: RunRecord, series: RunSeries | None = None) -> Path:
    """Write the series (atomically, first) and then append the record's line."""
    _check_run_id(record.run_id)
    _write_series(Path(folder), record.run_id, series)
    try:
        append_row(folder, record.to_row())
    except NotSaved as exc:
        exc.lost = record
        raise
    return runs_path(folder)


def write_record(folder: str | os.PathLike[str], record: RunRecord, series: RunSeries | None = None) -> Path:
    """The record as a file of its own (`records/<run_id>.json`), written atomically after its series:
    safe where many hosts write into one folder at once (module docstring)."""
    path = record_path(folder, record.run_id)
    _write_series(Path(folder), record.run_id, series)
    try:
        write_json_atomic(path, record.to_row())
    except OSError as exc:
        raise NotSaved.record(path, exc, record) from None
    return path


def _write_series(folder: Path, run_id: str, series: RunSeries | None) -> None:
    """A run's series, written before its record; where it cannot be (a full disk) the record is
    still worth more than its raw series, and readers do without one: a warning, not a stop."""
    if series is None:
        return
    path = folder / SERIES_DIR / f"{run_id}.json"
    try:
        write_json_atomic(path, series.to_dict())
    except OSError as exc:
        print(f"warning: {path}: the run's series could not be written ({exc.strerror or exc}); its record is "
              "written without it", file=sys.stderr)


def record_path(folder: str | os.PathLike[str], run_id: str) -> Path:
    _check_run_id(run_id)
    return Path(folder) / RECORDS_DIR / f"{run_id}.json"


def append_row(folder: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append a record's line whole, or raise NotSaved and leave runs.jsonl as it was."""
    path = runs_path(folder)
    line = (json.dumps(finite(row), allow_nan=False) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with _locked(fd):
                if _ends_torn(path):
                    line = b"\n" + line  # step past a line a crash left unfinished
                _write_whole(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise NotSaved.record(path, exc) from None


def _write_whole(fd: int, line: bytes) -> None:
    """All of `line`, through as many writes as it takes (a nearly full disk takes part of one), and
    on disk; or, where it cannot be, the file cut back to its length before, leaving no torn line."""
    size = os.fstat(fd).st_size
    try:
        while line:
            written = os.write(fd, line)
            if not written:
                raise OSError(errno.EIO, "a write wrote nothing")
            line = line[written:]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):  # where even that fails, readers skip the torn line
            os.ftruncate(fd, size)
        raise


def unwritable(folder: str | os.PathLike[str], also: Iterable[str] = ()) -> str:
    """What of a results folder a run could not write, checked before it trains ("" when all
    can be): runs.jsonl itself (another user's, say) and each subfolder already there, the
    records' and those named in `also` (a sweep's ledger)."""
    base = Path(folder)
    subfolders = (SERIES_DIR, SAMPLES_DIR, RECORDS_DIR, LOCKS_DIR, *also)
    try:
        if runs_path(base).exists():
            os.close(os.open(runs_path(base), os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        return f"{runs_path(base)}: {exc.strerror or exc}"
    for sub in (base, *(base / name for name in subfolders)):
        if sub.exists() and not sub.is_dir():
            return f"{sub}: not a folder"
        try:
            if sub.is_dir():
                with tempfile.TemporaryFile(dir=sub):
                    pass
        except OSError as exc:  # named by the folder: the file it names, if any, is a random temporary one
            return f"{sub}: {exc.strerror or exc}"
    return ""


def write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        json.dump(finite(payload), handle, allow_nan=False)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file written under a temporary name beside `path`, flushed to disk, then renamed onto it:
    a reader sees the old file or the whole new one. It is created as `open` creates a file (0666
    less the umask, a shared folder's default ACL), not with mkstemp's 0600, which would hide
    results and data on a shared filesystem from the folder's other users."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_rows(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record as a dict: runs.jsonl in file order, then records/ in run id (start time) order,
    each run id once; raises CorruptResults naming the first line or file that is not JSON or not
    a record (`result.record_problem`: required columns, their types, the schema version)."""
    path = runs_path(folder)
    files = _record_files(folder)
    there = _runs_file_there(path)
    if not there and not files:
        raise NoResults(f"no results at {path}: run `vaebench run` or `vaebench sweep` first")
    try:
        rows = _read_lines(path) if there else []
    except OSError as exc:
        raise UnreadableResults(path, exc) from None
    for file in files:
        try:
            rows.append(_read_record_file(file))
        except OSError as exc:
            raise UnreadableResults(file, exc) from None
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(str(row["run_id"]), row)
    return list(unique.values())


def _read_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise CorruptResults(path, line_no, "not UTF-8 text") from None
            except json.JSONDecodeError as exc:
                if _cut_short(raw, exc):
                    _say_once(f"warning: {path}:{line_no}: a record cut short while it was written (a crash or a "
                              "full disk), skipped; a resumed sweep runs again a point that has no other record")
                    continue
                raise CorruptResults(path, line_no, f"not JSON: {exc.msg}") from None
            problem = record_problem(row)
            if problem:
                raise CorruptResults(path, line_no, problem)
            rows.append(row)
    return rows


def _read_record_file(path: Path) -> dict[str, Any]:
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptResults(path, exc.lineno, f"not JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise CorruptResults(path, 1, "not UTF-8 text") from None
    problem = record_problem(row)
    if problem:
        raise CorruptResults(path, 1, problem)
    if row["run_id"] != path.stem:
        raise CorruptResults(path, 1, f"run_id {row['run_id']!r} is not the file's name")
    return dict(row)


def _record_files(folder: str | os.PathLike[str]) -> list[Path]:
    """records/*.json, sorted: run ids start with their UTC start time. Temporary files (a writer
    between its write and its rename, or one that died there) end in .tmp and are not records."""
    base = Path(folder)
    base = base.parent if base.name == RUNS_FILE else base
    records = base / RECORDS_DIR
    return sorted(records.glob("*.json")) if records.is_dir() else []


def rows_if_any(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """`read_rows`, or no rows where the folder holds no record yet."""
    try:
        return read_rows(folder)
    except NoResults:
        return []


def done_keys(folder: str | os.PathLike[str]) -> set[tuple[str, int]]:
    """(spec_key, repeat) of every point with a successful run: what a resumed sweep skips.
    A point whose runs all failed (a crash, a preempted job) runs again."""
    return {(row["spec_key"], row["repeat"]) for row in rows_if_any(folder) if row["status"] == OK}


def load_runs(folder: str | os.PathLike[str], *, ok_only: bool = False) -> pd.DataFrame:
    """All records of a results folder as a DataFrame, one row per run (columns: docs/columns.md)."""
    return runs_table(read_rows(folder), ok_only=ok_only)


def runs_table(rows: list[dict[str, Any]], *, ok_only: bool = False) -> pd.DataFrame:
    """`load_runs` of records already read (`read_rows`), for a reader that needs them again (`epochs_table`)."""
    import pandas as pd

    frame = _numeric(pd.DataFrame(_with_scaling([_whole_epochs(row) for row in rows])))
    if ok_only and not frame.empty:
        frame = frame[frame["status"] == OK].reset_index(drop=True)
    return frame


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Every numeric measurement column docs/columns.md names is there, as float: NaN where it was
    not taken, however many runs lack it (JSON's null would make it a column of None, and a column
    no record holds would be missing). Run fields keep their values: `threads` None is torch's
    default, not a missing number."""
    import pandas as pd

    if frame.empty:
        return frame
    measured = [c for c, kinds in COLUMN_TYPES.items() if set(kinds) <= {int, float} and c not in SPEC_FIELDS]
    missing = [c for c in measured if c not in frame.columns]
    frame = pd.concat([frame, pd.DataFrame(math.nan, index=frame.index, columns=missing)], axis=1)
    for column in measured:
        if frame[column].dtype == object:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _with_scaling(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of several ranks recorded before the folder held their one-rank baseline (a sweep that
    ran the N-rank point first) get their scaling efficiency from the baseline runs there now, by
    the rule applied when a run is recorded after its baseline."""
    filled = []
    rate_of: Callable[[RunSpec, str], float] | None = None  # indexed once, at the first run that needs it
    for row in rows:
        if row.get("status") == OK and number(row.get("world_size")) > 1 and math.isnan(
                number(row.get("scaling_efficiency"))):
            spec = RunSpec.from_dict(row)
            rate_of = rate_of or single_rank_rates(rows)
            single = rate_of(spec, str(row.get("fp_hostname") or ""))
            row = {**row, "single_rank_samples_per_s": finite(single),
                   "scaling_efficiency": finite(scaling_efficiency(number(row.get("samples_per_s")),
                                                                   spec.world_size, single))}
        filled.append(row)
    return filled


def _whole_epochs(row: dict[str, Any]) -> dict[str, Any]:
    """A record from before `last_epoch_partial` was kept, read by today's rule: its `epoch_s` is
    the median of its whole epochs (None when --steps cut its only epoch short), not a partial
    epoch's time."""
    if "last_epoch_partial" in row or row.get("status") != OK or not last_epoch_cut_short(row):
        return row
    whole = [t for t in (row.get("epoch_times_s") or [])[:-1] if isinstance(t, int | float)]
    return {**row, "epoch_s": median(whole) if whole else None}


def load_epochs(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per (run, epoch): loss, epoch wall time, the wall clock elapsed at its end, and
    whether `--steps` cut it short (`partial`: the run's last epoch, at most)."""
    return epochs_table(read_rows(folder))


def epochs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """`load_epochs` of records already read (`read_rows`)."""
    import pandas as pd

    rows = []
    for run in runs:
        losses = run.get("epoch_losses") or []
        times = run.get("epoch_times_s") or []
        cut = last_epoch_cut_short(run)
        elapsed = 0.0
        for epoch, (loss, seconds) in enumerate(zip(losses, times, strict=False), start=1):
            elapsed += seconds
            rows.append(
                {
                    "run_id": run["run_id"],
                    "spec_key": run["spec_key"],
                    "epoch": epoch,
                    "loss": loss,
                    "epoch_s": seconds,
                    "elapsed_s": elapsed,
                    "partial": cut and epoch == len(losses),
                }
            )
    return pd.DataFrame(rows, columns=["run_id", "spec_key", "epoch", "loss", "epoch_s", "elapsed_s", "partial"])


def load_series(folder: str | os.PathLike[str], run_id: str) -> RunSeries:
    """A run's raw series; raises UsageError naming the file when it is not one or cannot be
    read, FileNotFoundError when there is none."""
    _check_run_id(run_id)
    path = Path(folder) / SERIES_DIR / f"{run_id}.json"
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a series file ({exc})") from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableResults(path, exc) from None
    if not isinstance(payload, dict):
        raise UsageError(f"{path}: not a series file (a JSON object of step_ms, monitor, ...)")
    fields: dict[str, Any] = {}
    for name, check, what in SERIES_FIELDS:
        value = payload.get(name) or []
        if not isinstance(value, list) or not all(check(v) for v in value):
            raise UsageError(f"{path}: {name} should be {what}")
        fields[name] = value
    fields["step_ms"] = [float(v) for v in fields["step_ms"]]
    t0 = payload.get("monitor_t0_unix")
    if t0 is not None and not _is_number(t0):
        raise UsageError(f"{path}: monitor_t0_unix should be a number")
    return RunSeries(**fields, monitor_t0_unix=math.nan if t0 is None else float(t0))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_numbers(value: object) -> bool:
    return isinstance(value, list) and all(_is_number(v) for v in value)


# What each list of a series file holds: a field of RunSeries, its element check, in words.
SERIES_FIELDS: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("step_ms", _is_number, "a list of numbers"),
    ("monitor", lambda v: isinstance(v, dict), "a list of objects"),
    ("step_samples", _is_count, "a list of whole numbers"),
    ("excluded_steps", _is_count, "a list of whole numbers"),
    ("rank_step_ms", _is_numbers, "a list of lists of numbers"),
    ("allreduce_ms", _is_numbers, "a list of lists of numbers"),
)


def load_monitor(folder: str | os.PathLike[str], run_id: str) -> pd.DataFrame:
    """A run's outside monitor samples, one row each: `t` in seconds since the monitor started,
    `t_unix` the same as a Unix time (to set beside the record's `train_start_unix`) where the
    series file has the monitor's start, and the sampled columns (docs/columns.md, "series")."""
    import pandas as pd

    series = load_series(folder, run_id)
    frame = pd.DataFrame(series.monitor)
    if "t" in frame and math.isfinite(series.monitor_t0_unix):
        frame.insert(frame.columns.get_loc("t") + 1, "t_unix", frame["t"] + series.monitor_t0_unix)
    return frame


@contextlib.contextmanager
def claim(folder: str | os.PathLike[str], key: str, repeat: int) -> Iterator[bool]:
    """Hold a point of a sweep so a second sweep on the same folder skips it; yields False
    when another process holds it. The lock dies with its process, so a killed sweep leaves
    nothing stale behind, and its file goes with the claim."""
    locks = Path(folder) / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{key}-{repeat}.lock"
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        if _names(path, fd):
            break
        os.close(fd)  # its holder removed the file between our open and our lock: claim the new one
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the unlock, so no one locks a file that is no longer the claim
        os.close(fd)


def _names(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _check_run_id(run_id: object) -> None:
    problem = run_id_problem(run_id)
    if problem:
        raise UsageError(problem)


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


# What a write cut short can leave past the last byte the decoder took: a string not closed, an
# escape's first characters, a number's sign, point or exponent without its digits, or the first
# letters of null, true or false.
_UNFINISHED = re.compile("|".join([
    r'"(?:[^"\\]|\\.)*\\?', r"\\", r"(?<=\\)u[0-9a-fA-F]{0,4}", "-", r"\.", "[eE][-+]?",
    *(word[:n] for word in ("null", "true", "false") for n in range(1, len(word))),
]))


def _cut_short(raw: bytes, exc: json.JSONDecodeError) -> bool:
    """A record's line that ends mid-record: it opens like one and is valid JSON up to its last
    byte, so the decoder stopped at its end or inside its last token. `append_row` steps past such
    a line with a newline of its own, so it may sit anywhere."""
    text = raw.decode("utf-8").rstrip()
    return text.lstrip().startswith("{") and (exc.pos >= len(text) or bool(_UNFINISHED.fullmatch(text, exc.pos)))


_said: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr)


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


