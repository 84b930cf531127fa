"""The data's layout on disk: torchvision's raw MNIST folder of idx files.

Every data source is written in this layout by the parent (`measure.data`) and read by the
training child (`train.loaders`), or by torchvision's own `MNIST` class, unchanged.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import UsageError
from .storage import atomic_file

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
# An idx file's magic number is 0, 0, its type (0x08, unsigned bytes), its number of dimensions.
IMAGES_MAGIC = 0x0803  # 2051: MNIST's images, (N, 28, 28)
LABELS_MAGIC = 0x0801  # 2049: MNIST's labels, (N,)
_HOLDS = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}


def raw_folder(root: str | os.PathLike[str]) -> Path:
    """Where torchvision's MNIST layout keeps the idx files under a data root."""
    return Path(root) / "MNIST" / "raw"


def write_layout(
    root: Path, images: np.ndarray, labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray
) -> None:
    """Write torchvision's raw MNIST layout under root, each file atomically."""
    raw = raw_folder(root)
    raw.mkdir(parents=True, exist_ok=True)
    _write_idx(raw / TRAIN_IMAGES, images)
    _write_idx(raw / TRAIN_LABELS, labels)
    _write_idx(raw / TEST_IMAGES, test_images)
    _write_idx(raw / TEST_LABELS, test_labels)


def train_images(root: str | os.PathLike[str]) -> np.ndarray:
    """The training images under root, uint8 (N, 28, 28): what torchvision's MNIST(...).data holds."""
    return read_idx(raw_folder(root) / TRAIN_IMAGES, IMAGES_MAGIC)


def idx_shape(path: Path, magic: int) -> tuple[int, ...]:
    """The shape an unsigned-byte idx file declares, checked against the file's size, without
    reading its data. A file that is not one, has another magic number than `magic` (images or
    labels), or is cut short, is a UsageError naming it."""
    with open(path, "rb") as handle:
        return _header(path, handle, path.stat().st_size, magic)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An unsigned-byte idx file of MNIST's images or labels (`magic`), as `_write_idx` and
    torchvision's download leave it."""
    with open(path, "rb") as handle:
        shape = _header(path, handle, path.stat().st_size, magic)
        array = np.fromfile(handle, dtype=np.uint8)  # writable, read once
    return array.reshape(shape)


def _header(path: Path, handle: BinaryIO, size: int, magic: int) -> tuple[int, ...]:
    head = handle.read(4)
    if len(head) < 4:
        raise UsageError(f"{path}: {len(head)} bytes, too short for an idx file")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise UsageError(f"{path}: {_wrong_magic(found, magic)}")
    ndim = magic & 0xFF
    dims = handle.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise UsageError(f"{path}: cut short inside its header")
    shape: tuple[int, ...] = struct.unpack(f">{ndim}I", dims)
    data = size - 4 - 4 * ndim
    if data != math.prod(shape):
        raise UsageError(f"{path}: {data} bytes of data for shape {shape} (cut short, or not this file)")
    return shape


def _wrong_magic(found: int, magic: int) -> str:
    if found in _HOLDS:
        what = f": a file of {_HOLDS[found]}"
    elif found >> 8 != 0x08:
        what = ": not an unsigned-byte idx file"
    else:
        what = ""
    return f"magic number {found}, not MNIST's {magic} for {_HOLDS[magic]}{what}"


def _write_idx(path: Path, array: np.ndarray) -> None:
    # idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), then big-endian int32 dims, then data.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with atomic_file(path, "wb") as handle:
        handle.write(header)
        handle.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
