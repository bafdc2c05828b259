"""Fashion-MNIST (Xiao et al., 2017) from the original idx ``.gz`` files.

Files, as shipped by Debian's ``dataset-fashion-mnist``: ``{train,t10k}-images-idx3-ubyte.gz``
(a 16-byte header: magic 2051, count, rows, columns; then the pixels) and
``{train,t10k}-labels-idx1-ubyte.gz`` (an 8-byte header: magic 2049, count; then the labels).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ._cache import require_files

__all__ = ["CLASSES", "load_fashion_mnist", "read_idx_images", "read_idx_labels"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx_images(path: str | os.PathLike[str]) -> Tensor:
    """Read a gzipped idx3 image file.

    Args:
        path: the ``*-images-idx3-ubyte.gz`` file.

    Returns:
        uint8 tensor of shape ``[N, rows, cols]``.

    Raises:
        ValueError: on a wrong magic number or a size that does not match the header.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 16:
        raise ValueError(f"{path}: too short for an idx3 header ({len(data)} bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC:
        raise ValueError(f"{path}: bad magic number {magic}, expected {IMAGES_MAGIC} (idx3 images)")
    if len(data) != 16 + n * rows * cols:
        raise ValueError(f"{path}: {len(data) - 16} pixel bytes, header says {n}x{rows}x{cols}")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    return torch.from_numpy(pixels.copy())


def read_idx_labels(path: str | os.PathLike[str]) -> Tensor:
    """Read a gzipped idx1 label file.

    Args:
        path: the ``*-labels-idx1-ubyte.gz`` file.

    Returns:
        int64 tensor of shape ``[N]``.

    Raises:
        ValueError: on a wrong magic number or a size that does not match the header.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for an idx1 header ({len(data)} bytes)")
    magic, n = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC:
        raise ValueError(f"{path}: bad magic number {magic}, expected {LABELS_MAGIC} (idx1 labels)")
    if len(data) != 8 + n:
        raise ValueError(f"{path}: {len(data) - 8} label bytes, header says {n}")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64))


def load_fashion_mnist(
    split: Literal["train", "test"] = "train", root: str | os.PathLike[str] | None = None
) -> tuple[Tensor, Tensor]:
    """Load one split of Fashion-MNIST.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        root: data root; see :func:`~torchbloop.experiments.data.dataset_dir`
            (``TORCHBLOOP_FASHION_MNIST`` points at a folder holding the four ``.gz`` files).

    Returns:
        ``(images, labels)``: uint8 ``[N, 28, 28]`` and int64 ``[N]`` with values in 0..9
        (names in :data:`CLASSES`), in file order.

    Raises:
        ValueError: for another split, or a malformed file.
        DataNotFoundError: when the files are absent.
    """
    if split not in _PREFIX:
        raise ValueError(f"Invalid split={split!r}: must be 'train' or 'test'")
    prefix = _PREFIX[split]
    images_path, labels_path = require_files(
        "fashion_mnist",
        [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"],
        root,
    )
    images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    if len(images) != len(labels):
        raise ValueError(f"{Path(images_path).parent}: {len(images)} images, {len(labels)} labels")
    return images, labels
