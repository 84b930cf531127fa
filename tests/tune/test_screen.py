"""The batch search's one warm process, seen from the parent: what its trials file says."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from vaebench.measure import process
from vaebench.result import DataInfo
from vaebench.spec import RunSpec
from vaebench.tune.screen import TRIALS_FILE, read_trials, screen
from vaebench.tune.search import Trial, trial_spec

BASE = RunSpec(data="synthetic", samples=1024)


def test_a_stopped_screen_keeps_its_finished_trials_and_leaves_out_the_killed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "screen"
    finished = Trial(trial_spec(BASE, 16), samples_per_s=500.0, wall_s=1.0)

    def stopped(*_: object, **__: object) -> None:
        lines = [{"started": finished.spec.to_dict()}, finished.to_dict(), {"started": trial_spec(BASE, 32).to_dict()}]
        (work / TRIALS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
        raise KeyboardInterrupt  # Ctrl-C while batch 32 trains: run_child has killed the screen

    monkeypatch.setattr(process, "run_child", stopped)
    result = screen(BASE, DataInfo("synthetic", 1024, 1.0, ""), work=work, max_batch=64, start=16, budget_s=10.0)
    assert result.interrupted == signal.SIGINT and [t.batch for t in result.trials] == [16]
    assert result.stop_reason == "interrupted; trials finished before that are kept"
    # A screen that died on its own still names the batch it died on.
    assert read_trials(work).trials[-1].reason.startswith("crashed mid-trial")
