"""`--syscalls`: the tracers' summary tables parsed, the tool found or its absence refused."""

from __future__ import annotations

import math
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from vaebench.cli import main
from vaebench.errors import Interrupted, UsageError
from vaebench.measure import syscalls
from vaebench.measure.process import ChildExit
from vaebench.measure.syscalls import PERF, STRACE, find_tracer, parse_perf_trace, parse_strace
from vaebench.protocol import Answer, Request
from vaebench.result import OK, ProcessUsage, StepSplit, SyscallCount, TrainMetrics
from vaebench.storage import read_rows

# strace 6.1 -c -f on this machine (a shortened copy of a real table).
STRACE_TABLE = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 77.03    0.337534        4219        80        40 wait4
  4.09    0.017921          10      1698       326 newfstatat
  2.70    0.011841          12       951           mmap
  0.44    0.001931          31        62           futex
------ ----------- ----------- --------- --------- ----------------
100.00    0.438204          48      9098      1355 total
"""

# perf trace -s on this machine: one table per thread, summed by the parser.
PERF_TABLE = """\

 Summary of events:

 python (17254), 1556 events, 94.2%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   futex                 10      0    10.822     0.014     1.082     3.220     38.37%
   newfstatat           272     43     5.886     0.014     0.022     0.063      1.88%


 python (17255), 30 events, 1.8%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   munmap                 3      0     0.100     0.014     0.033     0.063     45.39%
   futex                  1      0     0.022     0.022     0.022     0.022      0.00%
"""


def test_strace_table_is_read_call_by_call_blank_errors_as_zero() -> None:
    counts = parse_strace(STRACE_TABLE)
    assert [c.syscall for c in counts] == ["wait4", "newfstatat", "mmap", "futex"]
    assert counts[0] == SyscallCount("wait4", 80, 40, 0.337534)
    assert counts[2] == SyscallCount("mmap", 951, 0, 0.011841)
    assert parse_strace("") == ()


def test_perf_trace_tables_are_summed_over_threads_in_seconds() -> None:
    counts = parse_perf_trace(PERF_TABLE)
    assert counts[0].syscall == "futex" and counts[0].calls == 11
    assert counts[0].seconds == pytest.approx(0.010844)
    assert {c.syscall for c in counts} == {"futex", "newfstatat", "munmap"}
    assert next(c for c in counts if c.syscall == "newfstatat").errors == 43


def test_strace_first_then_perf_where_it_works_else_exit_2_naming_the_packages() -> None:
    assert find_tracer(lambda name: f"/usr/bin/{name}") is STRACE
    only_perf = {"perf": "/usr/bin/perf"}.get
    assert find_tracer(only_perf, perf_works=lambda: True) is PERF
    with pytest.raises(UsageError, match="apt-get install strace") as refused:
        find_tracer(only_perf, perf_works=lambda: False)
    assert refused.value.exit_code == 2
    with pytest.raises(UsageError, match="linux-perf"):
        find_tracer(lambda name: None)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_real_trace_of_a_child_counts_its_threads_calls(tmp_path: Path) -> None:
    import os
    import sys

    code = "import threading; [t.start() or t.join() for t in [threading.Thread(target=len, args=([],))] * 1]"
    exit_, counts = syscalls.trace(STRACE, [sys.executable, "-c", code], env=dict(os.environ), timeout=60)
    assert exit_.usage.exit_code == 0
    names = {c.syscall for c in counts}
    assert "clone3" in names or "clone" in names  # the thread's creation was seen: -f follows it
    assert all(c.calls > 0 for c in counts)


def _trained_child(argv: Sequence[str], **_: object) -> ChildExit:
    """A training child that answers at once with a finished run."""
    request = Request.read(Path(argv[-1]))
    metrics = TrainMetrics(
        t_import_s=1.0, t_data_s=0.1, t_model_s=0.1, t_first_step_s=0.01, train_s=1.0, steps_done=2,
        samples_seen=256, warmup_steps=1, step_median_ms=5.0, step_iqr_ms=0.1, samples_per_s=1e4, epoch_s=math.nan,
        final_loss=500.0, epoch_losses=[500.0], epoch_times_s=[1.0], split=StepSplit(), model_flops_per_s=1e9,
        peak_flops_per_s=math.nan, flops_frac=math.nan)
    Answer(status=OK, metrics=metrics).write(Path(request.result))
    usage = ProcessUsage(real_s=2.0, user_s=1.5, sys_s=0.2, peak_rss_mb=300.0, ctx_voluntary=10, ctx_involuntary=5,
                         exit_code=0)
    return ChildExit(usage=usage, timed_out=False, signal=None)


@pytest.mark.parametrize(("stop", "status"), [(KeyboardInterrupt(), 130), (Interrupted(signal.SIGTERM), 143)])
def test_a_stop_in_the_traced_run_keeps_the_timed_run_without_a_syscall_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: BaseException,
    status: int,
) -> None:
    def stopped(*_: object) -> None:
        raise stop

    monkeypatch.setattr(syscalls, "find_tracer", lambda: STRACE)
    monkeypatch.setattr("vaebench.measure.run.run_child", _trained_child)
    monkeypatch.setattr("vaebench.measure.run.cached_peak", lambda *_, **__: 1e12)
    monkeypatch.setattr("vaebench.measure.run.traced_run", stopped)
    out = tmp_path / "out"
    assert main(["run", "--data", "synthetic", "--samples", "256", "--steps", "2", "--syscalls",
                 "--out", str(out)]) == status
    (row,) = read_rows(out)  # was: no record, the finished timed run lost with the diagnostic one
    assert row["status"] == OK and row["final_loss"] == 500.0
    assert "syscalls" not in row and "syscall_tool" not in row  # not measured
    err = capsys.readouterr().err
    assert "interrupted during the --syscalls diagnostic run" in err and "the timed run" in err
