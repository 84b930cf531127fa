from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vaebench.machine import THREAD_ENV_VARS
from vaebench.measure import peak
from vaebench.measure.child_env import child_process_env
from vaebench.spec import RunSpec


class FakeProbe:
    """Stands in for subprocess.run: records each probe's environment, answers from a list."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.envs: list[dict[str, str]] = []

    def __call__(self, argv: list[str], *, env: dict[str, str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.envs.append(env)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return subprocess.CompletedProcess(argv, 0, stdout=answer, stderr="")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path))
    return tmp_path / "peak_flops.json"


def test_the_probe_runs_with_the_same_thread_environment_as_a_run(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMP_AFFINITY", "compact")
    probe = FakeProbe("1.5e11\n")
    monkeypatch.setattr(peak.subprocess, "run", probe)
    spec = RunSpec(threads=3, omp_wait_policy="passive", bind=True)
    assert peak.cached_peak(spec) == 1.5e11
    run_env = child_process_env(spec)
    for name in (*THREAD_ENV_VARS, "CUDA_DEVICE_ORDER"):
        assert probe.envs[0].get(name) == run_env.get(name), name
    assert probe.envs[0]["OPENBLAS_NUM_THREADS"] == "3"
    assert (probe.envs[0]["OMP_WAIT_POLICY"], probe.envs[0]["OMP_PROC_BIND"]) == ("PASSIVE", "close")


def test_kernel_knobs_off_their_default_get_a_peak_of_their_own() -> None:
    plain = peak.peak_key(RunSpec(threads=2))
    assert peak.peak_key(RunSpec(threads=2, omp_wait_policy="default")) == plain  # older caches stay valid
    assert peak.peak_key(RunSpec(threads=2, allocator="jemalloc")) == plain + "|allocator jemalloc"
    assert peak.peak_key(RunSpec(threads=2, omp_wait_policy="active", bind=True)).endswith(
        "|omp_wait_policy active|bind True")


def test_a_failed_probe_is_nan_and_is_not_cached(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failure = subprocess.CalledProcessError(1, ["python"], stderr="RuntimeError: CUDA error: no device\n")
    probe = FakeProbe(failure, "nan", "2e11")
    monkeypatch.setattr(peak.subprocess, "run", probe)
    spec = RunSpec()
    assert math.isnan(peak.cached_peak(spec))
    assert "no device" in capsys.readouterr().err
    assert not cache.exists()
    assert math.isnan(peak.cached_peak(spec))  # a probe printing nan is no peak either
    assert "printed nan" in capsys.readouterr().err
    assert peak.cached_peak(spec) == 2e11
    assert peak.cached_peak(spec) == 2e11 and len(probe.envs) == 3  # now from the cache
    assert json.loads(cache.read_text()) == {peak.peak_key(spec): 2e11}


def test_a_nan_cached_by_an_older_version_is_measured_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = RunSpec()
    cache.write_text(json.dumps({peak.peak_key(spec): math.nan}))
    assert math.isnan(peak.cached_peak(spec, measure=False))
    monkeypatch.setattr(peak.subprocess, "run", FakeProbe("3e11"))
    assert peak.cached_peak(spec) == 3e11


def test_a_peak_below_a_rate_already_reached_is_measured_again_and_only_rises(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = RunSpec(threads=2)
    cache.write_text(json.dumps({peak.peak_key(spec): 3.5e10}))  # measured while the cores were busy
    probe = FakeProbe("9e10", "2e10", subprocess.CalledProcessError(1, ["python"], stderr="killed\n"))
    monkeypatch.setattr(peak.subprocess, "run", probe)
    assert peak.cached_peak(spec, at_least=3e10) == 3.5e10 and not probe.envs  # not contradicted: kept
    assert peak.cached_peak(spec, at_least=7e10) == 9e10  # a run reached 70 GFLOP/s: measured again
    assert json.loads(cache.read_text()) == {peak.peak_key(spec): 9e10}
    assert peak.cached_peak(spec, at_least=1e11) == 9e10  # a lower measurement does not lower it
    assert peak.cached_peak(spec, at_least=1e11) == 9e10  # nor does a failed one
    assert len(probe.envs) == 3 and json.loads(cache.read_text()) == {peak.peak_key(spec): 9e10}
    assert peak.cached_peak(spec, at_least=1e12, measure=False) == 9e10


def test_a_peak_measured_beside_a_busy_neighbour_is_used_but_not_cached(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = RunSpec(threads=2)
    monkeypatch.setattr(peak.subprocess, "run", FakeProbe("4e10", "9e10"))
    # (wall, machine busy CPU s, children's CPU s): 2 s of probe, 1.8 s of it elsewhere on the machine.
    counts = iter([(0.0, 100.0, 10.0), (2.0, 105.8, 14.0), (10.0, 200.0, 20.0), (12.0, 204.1, 24.0)])
    monkeypatch.setattr(peak, "_cpu_counts", lambda: next(counts))
    assert peak.cached_peak(spec) == 4e10
    assert "other processes used 90% of a core" in capsys.readouterr().err and not cache.exists()
    assert peak.cached_peak(spec) == 9e10  # quiet (5% elsewhere): measured again, and cached
    assert json.loads(cache.read_text()) == {peak.peak_key(spec): 9e10}
    assert math.isnan(peak._elsewhere_pct((0.0, 0.0, 0.0), (0.01, 1.0, 0.0)))  # too short to judge


def test_a_cache_that_cannot_be_written_is_said_and_the_peak_still_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "file" / "cache"))  # as VAEBENCH_CACHE=/etc/hostname/c
    monkeypatch.setattr(peak.subprocess, "run", FakeProbe("1.5e11", "2e11"))
    assert peak.cached_peak(RunSpec()) == 1.5e11
    assert "could not be cached in" in capsys.readouterr().err
    assert peak.cached_peak(RunSpec()) == 2e11  # measured again
