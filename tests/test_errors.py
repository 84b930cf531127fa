"""One exception base, one exit status per kind: a bug never passes for bad input."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from vaebench.cli import main
from vaebench.errors import EXIT_BUG, EXIT_USAGE, Interrupted, UsageError, VaebenchError, signal_of
from vaebench.measure.data import DataUnavailable
from vaebench.reproduce.claim import ClaimError
from vaebench.storage import CorruptResults, NoResults
from vaebench.sweep import SweepError


def test_every_input_error_is_a_usage_error_with_exit_2() -> None:
    for kind in (SweepError, ClaimError, DataUnavailable, NoResults):
        assert issubclass(kind, UsageError) and kind("x").exit_code == EXIT_USAGE
    assert CorruptResults(Path("runs.jsonl"), 3, "bad").exit_code == EXIT_USAGE
    assert Interrupted(signal.SIGTERM).exit_code == 143 and Interrupted(signal.SIGHUP).exit_code == 129
    assert Interrupted().exit_code == 130


def test_a_stop_names_its_signal_ctrl_c_as_sigint() -> None:
    assert signal_of(KeyboardInterrupt()) == signal.SIGINT
    assert signal_of(Interrupted(signal.SIGTERM)) == signal.SIGTERM and signal_of(Interrupted(signal.SIGHUP)) == 1


def test_a_bug_prints_its_traceback_and_exits_70(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug in the report")

    monkeypatch.setattr("vaebench.analysis.report.build_report", broken)
    assert main(["report", str(tmp_path)]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'a bug in the report'" in err
    assert "please report it" in err and "exit status 70" in err


def test_a_vaebench_error_is_one_line_with_its_own_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Odd(VaebenchError):
        exit_code = 5

    def refuse(*args: object, **kwargs: object) -> None:
        raise Odd("refused for a reason")

    monkeypatch.setattr("vaebench.analysis.report.build_report", refuse)
    assert main(["report", str(tmp_path)]) == 5
    assert capsys.readouterr().err == "vaebench report: refused for a reason\n"


def test_a_missing_results_folder_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("vaebench report: error:") and err.count("\n") == 1
