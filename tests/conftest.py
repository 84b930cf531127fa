from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the peak-FLOP/s cache and prepared data of a test session out of the user's."""
    cache = tmp_path_factory.mktemp("vaebench-cache")
    os.environ["VAEBENCH_CACHE"] = str(cache)
    os.environ["VAEBENCH_DATA"] = str(cache / "data")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ["VAEBENCH_DATA"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
