"""The CUDA paths, run where a GPU is at hand (skipped without one, see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaebench import load_runs
from vaebench.cli import main

pytestmark = pytest.mark.gpu
TINY = ["--data", "synthetic", "--samples", "4096", "--epochs", "1", "--device", "cuda"]


def test_cuda_run_measures_device_time_and_nvml(tmp_path: Path) -> None:
    assert main(["run", *TINY, "--pin-memory", "--workers", "2", "--out", str(tmp_path)]) == 0
    row = load_runs(str(tmp_path)).iloc[0]
    assert row["split_device_compute_ms"] > 0 and row["split_device_copy_ms"] >= 0
    assert row["gpu_util_mean"] >= 0 and row["gpu_mem_max_mb"] > 0
    assert row["fp_gpu_name"] and row["fp_cuda"]


@pytest.mark.parametrize("loader", ["reference", "tensor", "device"])
def test_every_loader_trains_on_cuda(tmp_path: Path, loader: str) -> None:
    assert main(["run", *TINY, "--loader", loader, "--steps", "8", "--out", str(tmp_path)]) == 0
    assert load_runs(str(tmp_path)).iloc[0]["steps_done"] == 8


def test_fp16_autocast_with_a_grad_scaler(tmp_path: Path) -> None:
    assert main(["run", *TINY, "--amp", "fp16", "--loader", "device", "--out", str(tmp_path)]) == 0
    assert load_runs(str(tmp_path)).iloc[0]["final_loss"] < 600


def test_profiled_cuda_run_counts_kernels(tmp_path: Path) -> None:
    assert main(["run", *TINY, "--profile", "--profile-steps", "5", "--out", str(tmp_path)]) == 0
    row = load_runs(str(tmp_path)).iloc[0]
    assert row["profile_kernels_per_step"] > 10
    assert 0 < row["profile_kernel_fraction"] <= 1

