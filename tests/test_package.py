"""Import hygiene and the small helpers every command shares."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from vaebench.cli import main
from vaebench.progress import ProgressBar, format_duration


@pytest.mark.parametrize("module", ["vaebench", "vaebench.compare", "vaebench.report", "vaebench.cli"])
def test_analysis_side_never_imports_torch(module: str) -> None:
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_progress_bar_shows_done_total_elapsed_and_left() -> None:
    stream = io.StringIO()
    bar = ProgressBar(label="run", stream=stream)
    bar.update(5, 10, epoch=1, loss=123.456)
    bar.update(10, 10)
    bar.close()
    text = stream.getvalue()
    assert "5/10" in text and "10/10" in text and "left" in text and "loss 123.46" in text
    assert text.endswith("\n")


def test_durations_read_like_a_clock() -> None:
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "sweep", "report", "compare", "env"):
        assert command in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out
