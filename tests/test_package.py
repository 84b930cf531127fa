"""The small helpers every command shares; the import rules are in test_layers.py."""

from __future__ import annotations

import io

import pytest

from vaebench._format import ProgressBar, format_duration
from vaebench.cli import main


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


def test_counts_read_in_the_singular_at_one_and_in_the_right_plural() -> None:
    from vaebench._format import counted

    assert [counted(1, "epoch"), counted(10, "epoch"), counted(2, "context switch"), counted(3, "run")] == \
        ["1 epoch", "10 epochs", "2 context switches", "3 runs"]
    assert counted(float("nan"), "step") == "? steps"


def test_a_percentage_never_rounds_a_small_share_to_nothing_or_a_large_one_to_all() -> None:
    from vaebench._format import percent

    assert [percent(0.1), percent(0.05), percent(0.125), percent(0.9)] == ["10%", "5%", "12.5%", "90%"]
    assert percent(1e-7) == "1e-05%" and percent(1 - 2e-9) == "99.9999998%"
    assert percent(0) == "0%" and percent(1) == "100%"


def test_a_rate_keeps_a_decimal_below_ten_so_its_parts_add_up() -> None:
    from vaebench._format import counted

    assert counted(3.08, "involuntary context switch", rate=True) == "3.1 involuntary context switches"
    assert counted(0.42, "voluntary context switch", rate=True) == "0.4 voluntary context switches"
    assert counted(1302.4, "minor fault", rate=True) == "1,302 minor faults"
