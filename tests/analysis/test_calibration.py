"""`vaebench calibrate`: one tiny real A/A sweep, resume, and every bad input refused with exit 2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from vaebench import storage
from vaebench.cli import main
from vaebench.measure.execution import Planned, SweepOutcome
from vaebench.measure.run import RunOptions
from vaebench.result import FAILED, RunRecord

TINY_RUN = """
[run]
device = "cpu"
data = "synthetic"
samples = 256
batch_size = 64
epochs = 1
threads = 1
loader = "tensor"
"""


def config(tmp_path: Path, text: str = TINY_RUN, head: str = "repeats = 3\n") -> Path:
    path = tmp_path / "one.toml"
    path.write_text(head + text)
    return path


def calibrate(tmp_path: Path, cfg: Path, *extra: str) -> int:
    return main(["calibrate", "--config", str(cfg), "--out", str(tmp_path / "out"), *extra])


def test_a_tiny_calibration_prints_the_noise_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path)
    assert calibrate(tmp_path, cfg, "--repeats", "2", "--threshold", "5%") == 0
    out = capsys.readouterr().out
    assert "A/A runs" in out and "n=3" in out and "recommendation:" in out
    assert "for a 5% threshold" in out
    assert len(storage.read_rows(tmp_path / "out")) == 2
    # Run again: both runs are found, none is repeated, the report is the same.
    assert calibrate(tmp_path, cfg, "--repeats", "2") == 0
    assert "2 already in" in capsys.readouterr().out
    assert len(storage.read_rows(tmp_path / "out")) == 2


def test_failed_runs_give_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def crash_all(todo: Sequence[Planned], options: RunOptions, **_: object) -> SweepOutcome:
        outcome = SweepOutcome()
        for planned in todo:
            record = RunRecord(planned.point.spec, f"run-{planned.point.repeat}", "now", FAILED,
                               "crashed: killed by SIGSEGV", repeat=planned.point.repeat)
            storage.append(options.out, record)
            outcome.records.append(record)
        return outcome

    monkeypatch.setattr("vaebench.measure.execution.run_points", crash_all)
    assert calibrate(tmp_path, config(tmp_path), "--repeats", "3") == 1
    err = capsys.readouterr().err
    assert "killed by SIGSEGV" in err and "only 0 successful" in err


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        ("[grid]\nloader = ['tensor', 'reference']\n" + TINY_RUN.replace('loader = "tensor"\n', ""), (),
         "expands to 2 configurations"),
        (TINY_RUN.replace("threads = 1", "threads = 0"), (), "threads must be at least 1"),
        (TINY_RUN.replace('device = "cpu"', 'device = "tpu"'), (), "unknown device"),
        ("[run]\nbogus = 1\n", (), "unknown run field"),
        (TINY_RUN, ("--repeats", "1"), "--repeats must be at least 2"),
        (TINY_RUN, ("--timeout", "0"), "--timeout must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, extra: tuple[str, ...], message: str
) -> None:
    assert calibrate(tmp_path, config(tmp_path, text), *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaebench calibrate: error:") and message in err
    assert not (tmp_path / "out").exists()  # refused before anything was made


def test_a_missing_config_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert calibrate(tmp_path, tmp_path / "absent.toml") == 2
    assert "no sweep file" in capsys.readouterr().err


def test_a_bad_threshold_is_refused_by_argparse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert calibrate(tmp_path, config(tmp_path), "--threshold", "10") == 2
    assert "(see `vaebench calibrate --help`)" in capsys.readouterr().err


def test_runs_beside_a_busy_neighbour_are_named_before_the_noise_they_made(tmp_path: Path) -> None:
    from tests.analysis.test_compare import SPEC, rows
    from vaebench.analysis.calibration import calibrate_folder

    for number, row in enumerate(rows(n=4)):
        storage.append_row(tmp_path, row | {"neighbour_cpu_pct": 90.0 if number == 1 else 3.0})
    result = calibrate_folder(tmp_path, SPEC.key(), repeats=4, advise_for=5)
    assert result.report is not None and result.contended == [90.0]
    assert result.warning.startswith("1 of 4 runs ran beside a busy neighbour") and "up to 90%" in result.warning
    quiet = tmp_path / "quiet"
    for row in rows(n=4):
        storage.append_row(quiet, row | {"neighbour_cpu_pct": 3.0})
    assert calibrate_folder(quiet, SPEC.key(), repeats=4, advise_for=5).warning == ""


def test_runs_past_repeats_are_left_out_and_named(tmp_path: Path) -> None:
    from tests.analysis.test_compare import SPEC, rows
    from vaebench.analysis.calibration import calibrate_folder

    for row in rows(n=6):
        storage.append_row(tmp_path, row)
    result = calibrate_folder(tmp_path, SPEC.key(), repeats=4, advise_for=5)
    assert result.report is not None and result.report.runs == 4 and result.beyond == 2
    assert "2 more runs" in result.left_out and "--repeats 6 would use them" in result.left_out
    assert calibrate_folder(tmp_path, SPEC.key(), repeats=6, advise_for=5).left_out == ""
