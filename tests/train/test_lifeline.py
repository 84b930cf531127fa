"""Which parent a training child ties its life to."""

from __future__ import annotations

import os

import pytest

from vaebench.protocol import PARENT_PID_ENV
from vaebench.train.lifeline import expected_parent, parent_of


def test_the_parent_is_the_vaebench_that_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv(PARENT_PID_ENV, "999999999")
    assert expected_parent() == 999_999_999  # not this process's parent: an orphan, to end


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_a_tracer_between_vaebench_and_the_child_is_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = os.getppid()  # as strace would be under `run --syscalls`
    vaebench = parent_of(tracer)
    assert vaebench is not None and parent_of(os.getpid()) == tracer
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv(PARENT_PID_ENV, str(vaebench))
    assert expected_parent() == tracer
