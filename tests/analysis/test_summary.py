from __future__ import annotations

from vaebench.analysis.summary import format_run
from vaebench.result import ProcessUsage, RunRecord
from vaebench.spec import RunSpec


def record(fingerprint: dict[str, str]) -> RunRecord:
    usage = ProcessUsage(2.0, 1.5, 0.4, 800.0, 10, 5, 0)
    return RunRecord(spec=RunSpec(), run_id="r1", started_at="now", process=usage, fingerprint=fingerprint)


def test_a_sandboxed_run_says_whose_accounting_sys_time_is() -> None:
    text = format_run(record({"sandbox": "gvisor", "kernel": "4.4.0"}))
    line = next(line for line in text.splitlines() if line.strip().startswith("sandbox"))
    assert "gvisor" in line and "sys time and context switches" in line and "not the host kernel" in line
    assert "sandbox" not in format_run(record({"sandbox": "", "kernel": "6.8.0"}))
    assert "sandbox" not in format_run(record({}))
