"""Byte-level helpers for the text datasets."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["encode_bytes", "split_text"]


def encode_bytes(text: str) -> Tensor:
    """Encode ``text`` as UTF-8 bytes in a uint8 tensor (a 256-symbol vocabulary).

    Example:
        >>> encode_bytes("hé").tolist()
        [104, 195, 169]
    """
    return torch.from_numpy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy())


def split_text(text: str, eval_fraction: float = 0.1) -> tuple[str, str]:
    """Split ``text`` deterministically into a training head and a held-out tail.

    Args:
        text: the corpus.
        eval_fraction: share of characters that goes to the held-out part, in ``[0, 1)``.

    Returns:
        ``(train, held_out)`` with ``train + held_out == text``.

    Raises:
        ValueError: for ``eval_fraction`` outside ``[0, 1)``.

    Example:
        >>> split_text("abcdefghij", 0.2)
        ('abcdefgh', 'ij')
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"Invalid eval_fraction={eval_fraction}: must be in [0, 1)")
    cut = len(text) - round(len(text) * eval_fraction)
    return text[:cut], text[cut:]
