"""Fixtures of the benchmark suite: tiny synthetic data in a private folder, one intra-op thread.

The suite runs in smoke mode by default (`--benchmark-disable` in pyproject's addopts: each
body once, as a test); `--benchmark-enable` times it for real (benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vaebench.measure.data import prepare
from vaebench.result import DataInfo
from vaebench.spec import RunSpec

TINY_SAMPLES = 1024  # 8 batches of 128: enough for a loader to cycle, small enough to write in a blink


@pytest.fixture(scope="session")
def bench_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared data stays out of the user's cache."""
    return tmp_path_factory.mktemp("vaebench-bench-data")


@pytest.fixture(scope="session")
def tiny(bench_data_dir: Path) -> tuple[RunSpec, DataInfo]:
    """A CPU spec on synthetic data of `TINY_SAMPLES` images, and that data."""
    spec = RunSpec(device="cpu", data="synthetic", samples=TINY_SAMPLES, epochs=1, threads=1)
    return spec, prepare("synthetic", bench_data_dir, spec.samples)


@pytest.fixture(scope="session")
def synthetic(bench_data_dir: Path) -> Callable[[int], DataInfo]:
    """`synthetic(samples)`: synthetic data of that many images, written once per size."""

    def make(samples: int) -> DataInfo:
        return prepare("synthetic", bench_data_dir, samples)

    return make


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, restored afterwards: steadier numbers on a shared machine."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Asking to save or compare timings means timing: it lifts addopts' smoke mode."""
    wants_numbers = ("benchmark_autosave", "benchmark_save", "benchmark_compare", "benchmark_json")
    if any(config.getoption(name, default=None) for name in wants_numbers):
        config.option.benchmark_enable = True
