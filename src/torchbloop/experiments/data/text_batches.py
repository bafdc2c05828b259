"""Byte-level text pipelines: corpora as uint8 tensors, held-out splits, fast random batches.

* Language modelling: a corpus is one flat ``uint8`` tensor of UTF-8 bytes; a batch is ``B``
  random windows of ``T + 1`` bytes, split into inputs ``[B, T]`` and next-byte targets
  ``[B, T]`` (:class:`WindowSampler`); evaluation uses fixed, evenly spaced windows
  (:func:`eval_windows`) so every run and every eval point scores the same bytes.
* Translation: each (source, target) pair becomes padded id rows, bytes ``0..255`` plus
  :data:`BOS`, :data:`EOS` and :data:`PAD` (:func:`encode_pairs`); :class:`PairSampler` draws
  random rows.

Example:
    >>> data = encode("abcdefghij" * 10)
    >>> sampler = WindowSampler(data, batch_size=4, seq_len=8, generator=torch.Generator().manual_seed(0))
    >>> x, y = sampler.sample()
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
    (torch.Size([4, 8]), True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "PAIR_VOCAB_SIZE",
    "PairSampler",
    "WindowSampler",
    "encode",
    "encode_pairs",
    "eval_windows",
    "holdout_split",
    "pair_batches",
    "windows_at",
]

BOS, EOS, PAD = 256, 257, 258
"""Special ids of the translation vocabulary (bytes are ``0..255``)."""
PAIR_VOCAB_SIZE = 259


def encode(text: str) -> Tensor:
    """UTF-8 bytes of ``text`` as a flat ``uint8`` tensor.

    Example:
        >>> encode("hé").tolist()
        [104, 195, 169]
    """
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def holdout_split(data: Tensor, eval_fraction: float) -> tuple[Tensor, Tensor]:
    """Split a flat corpus into a training head and a held-out tail.

    Args:
        data: flat tensor.
        eval_fraction: share of the elements held out, in ``(0, 1)``.

    Returns:
        ``(train, held_out)``, contiguous views that together are ``data``.

    Raises:
        ValueError: ``eval_fraction`` outside ``(0, 1)``.

    Example:
        >>> train, held = holdout_split(torch.arange(10), 0.2)
        >>> train.tolist(), held.tolist()
        ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"Invalid eval_fraction={eval_fraction}: must be in (0, 1)")
    cut = len(data) - max(1, round(len(data) * eval_fraction))
    return data[:cut], data[cut:]


def _check_window(n: int, seq_len: int) -> None:
    if seq_len < 1 or n < seq_len + 1:
        raise ValueError(
            f"Invalid seq_len={seq_len} for a corpus of {n} bytes: need 1 <= seq_len < {n}; "
            "use a shorter seq_len or a larger corpus"
        )


def windows_at(data: Tensor, starts: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    """Inputs and next-byte targets ``[len(starts), seq_len]`` (int64) of windows at ``starts``.

    Example:
        >>> x, y = windows_at(torch.arange(10), torch.tensor([0, 5]), 3)
        >>> x.tolist(), y.tolist()
        ([[0, 1, 2], [5, 6, 7]], [[1, 2, 3], [6, 7, 8]])
    """
    _check_window(len(data), seq_len)
    index = starts[:, None] + torch.arange(seq_len + 1)
    chunk = data[index].long()
    return chunk[:, :-1], chunk[:, 1:]


class WindowSampler:
    """Uniformly random ``[B, T]`` windows of a flat corpus (with replacement).

    Args:
        data: flat corpus (``uint8`` bytes or any integer tensor).
        batch_size: ``B``.
        seq_len: ``T``; each window reads ``T + 1`` elements.
        generator: source of randomness (seed it for reproducible batches).

    Raises:
        ValueError: ``batch_size < 1`` or a corpus shorter than ``seq_len + 1``.
    """

    def __init__(
        self, data: Tensor, *, batch_size: int, seq_len: int, generator: torch.Generator
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size={batch_size}: must be >= 1")
        _check_window(len(data), seq_len)
        self.data, self.batch_size, self.seq_len, self.generator = (
            data,
            batch_size,
            seq_len,
            generator,
        )

    def sample(self) -> tuple[Tensor, Tensor]:
        """One batch ``(inputs, targets)``, both ``[B, T]`` int64."""
        high = len(self.data) - self.seq_len
        starts = torch.randint(0, high, (self.batch_size,), generator=self.generator)
        return windows_at(self.data, starts, self.seq_len)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            yield self.sample()


def eval_windows(
    data: Tensor, *, n_windows: int, seq_len: int, batch_size: int
) -> list[tuple[Tensor, Tensor]]:
    """Fixed evaluation batches: ``n_windows`` windows with evenly spaced starts.

    The windows cover the corpus as evenly as possible (they overlap when the corpus is short),
    so a loss averaged over them estimates the corpus loss with the same bytes at every call.

    Example:
        >>> batches = eval_windows(torch.arange(100), n_windows=5, seq_len=4, batch_size=2)
        >>> [x.shape[0] for x, _ in batches], batches[0][0][0].tolist()
        ([2, 2, 1], [0, 1, 2, 3])
    """
    _check_window(len(data), seq_len)
    if n_windows < 1 or batch_size < 1:
        raise ValueError(
            f"Invalid n_windows={n_windows}, batch_size={batch_size}: both must be >= 1"
        )
    starts = torch.linspace(0, len(data) - seq_len - 1, n_windows).round().long()
    return [windows_at(data, s, seq_len) for s in starts.split(batch_size)]


def encode_pairs(pairs: Sequence[tuple[str, str]], max_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """Padded id tensors of (source, target) text pairs, bytes truncated to fit ``max_len``.

    Source row: ``bytes + EOS`` (at most ``max_len`` ids). Decoder input: ``BOS + bytes``;
    decoder target: ``bytes + EOS`` (each at most ``max_len`` ids). Padding is :data:`PAD`.
    Truncation cuts bytes, so a multi-byte UTF-8 character may be cut in two; the model sees
    bytes, not characters, so that is harmless.

    Returns:
        ``(src [N, S], tgt_in [N, T], tgt_out [N, T])`` int64, ``S, T <= max_len``.

    Raises:
        ValueError: ``max_len < 2`` or no pairs.

    Example:
        >>> src, tin, tout = encode_pairs([("ab", "c")], max_len=4)
        >>> src.tolist(), tin.tolist(), tout.tolist()
        ([[97, 98, 257]], [[256, 99]], [[99, 257]])
    """
    if max_len < 2:
        raise ValueError(f"Invalid max_len={max_len}: must be >= 2 (one byte plus EOS)")
    if not pairs:
        raise ValueError("Invalid pairs: empty; give at least one (source, target) pair")
    srcs = [s.encode("utf-8")[: max_len - 1] for s, _ in pairs]
    tgts = [t.encode("utf-8")[: max_len - 1] for _, t in pairs]
    s_len, t_len = max(map(len, srcs)) + 1, max(map(len, tgts)) + 1
    src_np = np.full((len(pairs), s_len), PAD, dtype=np.int64)
    tgt_in_np = np.full((len(pairs), t_len), PAD, dtype=np.int64)
    tgt_out_np = np.full((len(pairs), t_len), PAD, dtype=np.int64)
    tgt_in_np[:, 0] = BOS
    for i, (s, t) in enumerate(zip(srcs, tgts, strict=True)):
        src_np[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)
        src_np[i, len(s)] = EOS
        tgt_in_np[i, 1 : len(t) + 1] = tgt_out_np[i, : len(t)] = np.frombuffer(t, dtype=np.uint8)
        tgt_out_np[i, len(t)] = EOS
    return torch.from_numpy(src_np), torch.from_numpy(tgt_in_np), torch.from_numpy(tgt_out_np)


def _trim(*rows: Tensor) -> tuple[Tensor, ...]:
    """Drop trailing columns that are padding in every row (per tensor)."""
    out = []
    for r in rows:
        used = (r != PAD).any(dim=0).nonzero()
        out.append(r[:, : int(used.max()) + 1] if len(used) else r[:, :1])
    return tuple(out)


class PairSampler:
    """Random batches of rows of :func:`encode_pairs` output (with replacement).

    Trailing all-padding columns of each batch are dropped, so short batches are cheap.

    Example:
        >>> enc = encode_pairs([("ab", "c"), ("abcdef", "cd")], max_len=8)
        >>> s = PairSampler(enc, batch_size=3, generator=torch.Generator().manual_seed(0))
        >>> [t.shape[0] for t in s.sample()]
        [3, 3, 3]
    """

    def __init__(
        self, encoded: tuple[Tensor, Tensor, Tensor], *, batch_size: int, generator: torch.Generator
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size={batch_size}: must be >= 1")
        self.encoded, self.batch_size, self.generator = encoded, batch_size, generator

    def sample(self) -> tuple[Tensor, Tensor, Tensor]:
        """One batch ``(src, tgt_in, tgt_out)``."""
        idx = torch.randint(0, len(self.encoded[0]), (self.batch_size,), generator=self.generator)
        src, tgt_in, tgt_out = (t[idx] for t in self.encoded)
        src, tgt_in = _trim(src, tgt_in)
        return src, tgt_in, tgt_out[:, : tgt_in.shape[1]]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        while True:
            yield self.sample()


def pair_batches(
    encoded: tuple[Tensor, Tensor, Tensor], batch_size: int
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """All rows of ``encoded`` in order, as trimmed batches (for evaluation).

    Example:
        >>> enc = encode_pairs([("ab", "c")] * 5, max_len=4)
        >>> [b[0].shape[0] for b in pair_batches(enc, 2)]
        [2, 2, 1]
    """
    out = []
    for i in range(0, len(encoded[0]), batch_size):
        src, tgt_in, tgt_out = (t[i : i + batch_size] for t in encoded)
        src, tgt_in = _trim(src, tgt_in)
        out.append((src, tgt_in, tgt_out[:, : tgt_in.shape[1]]))
    return out
