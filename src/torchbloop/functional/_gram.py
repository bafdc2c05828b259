"""Pass 1 on torch ops: the Gram matrix of several tensor lists, per block, in float64.

The kernel path (:mod:`._native`) does this in C on plain CPU tensors; this module is the path
for everything else (CUDA, DTensor shards, bf16 and mixed dtypes, non-contiguous views). It
walks the tensors in chunks of about :data:`CHUNK` elements (large tensors are sliced, small
ones packed together), copies each chunk of every list into one float64 matrix ``X`` of shape
``[n_lists, chunk]`` and adds ``X X^T`` to the block's Gram: every inner product of the chunk
from one read of the data, in float64 whatever the inputs' dtype. Float64 accumulation keeps
the squares of tiny float32 gradients (norm ~1e-22, whose squares are subnormal or zero in
float32) and of huge ones (~1e20, whose squares overflow float32) exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

CHUNK = 1 << 16
"""Elements per chunk on the CPU (the float64 rows of a chunk stay in the L2 cache)."""

CHUNK_ACCELERATOR = 1 << 22
"""Elements per chunk on accelerators (fewer, larger launches)."""


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor, the tensor itself otherwise; complex as real pairs."""
    to_local = getattr(t, "to_local", None)
    if callable(to_local):
        t = to_local()
    return torch.view_as_real(t) if t.is_complex() else t


def gram_dtype(device: torch.device) -> torch.dtype:
    """Float64, except on devices without it (Apple MPS: float32)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _segments(
    sizes: Sequence[int], index: Sequence[int], chunk: int
) -> Iterator[list[tuple[int, int, int]]]:
    """Chunks of ``(tensor, start, stop)`` segments over the tensors ``index``, ~``chunk`` long."""
    group: list[tuple[int, int, int]] = []
    filled = 0
    for t in index:
        n = sizes[t]
        start = 0
        while start < n:
            stop = min(n, start + chunk - filled)
            group.append((t, start, stop))
            filled += stop - start
            start = stop
            if filled >= chunk:
                yield group
                group, filled = [], 0
    if group:
        yield group


def gram(
    lists: Sequence[Sequence[Tensor]],
    *,
    block_of: Sequence[int] | None = None,
    n_blocks: int = 1,
    pairs: Sequence[tuple[int, int]] | None = None,
    exact: bool = True,
) -> Tensor:
    """``[n_blocks, n, n]``: ``G[b, i, j] = sum over the tensors t of block b of <lists[i][t], lists[j][t]>``.

    Tensors may be DTensors (their local shards are used) or complex (real inner product).

    Args:
        lists: aligned tensor lists.
        block_of: the block of each tensor (default: one block).
        n_blocks: the number of blocks.
        pairs: the entries needed (default all); with ``exact=False`` only these are computed
            (the others are 0).
        exact: products in float64 whatever the inputs' dtype. False (CPU float32 lists):
            each chunk's inner products in float32 on views of the data, no copy, summed in
            float64 over chunks; squares below or above float32's range are then inexact, so
            callers check the result (:func:`in_float32_range`) and recompute with ``exact``.
    """
    locals_ = [[local(t) for t in tensors] for tensors in lists]
    n = len(locals_)
    first = locals_[0]
    device = first[0].device if first else torch.device("cpu")
    dtype = gram_dtype(device)
    if torch.compiler.is_compiling():
        return _traced_gram(locals_, block_of, n_blocks, pairs, dtype, device)
    sizes = [t.numel() for t in first]
    chunk = CHUNK if device.type == "cpu" else CHUNK_ACCELERATOR
    members: list[list[int]] = [[] for _ in range(n_blocks)]
    for t, b in enumerate(block_of if block_of is not None else [0] * len(first)):
        if sizes[t]:
            members[b].append(t)
    dtypes = {t.dtype for tensors in locals_ for t in tensors}
    direct = dtypes == {dtype} or (not exact and dtypes == {torch.float32})
    wanted = list(pairs) if pairs is not None else [(i, j) for i in range(n) for j in range(i, n)]
    buffer = None if direct else torch.empty((n, chunk), dtype=dtype, device=device)
    blocks = []
    for index in members:
        parts = []
        for group in _segments(sizes, index, chunk):
            if buffer is None:
                parts.append(_chunk_dots(locals_, group, wanted, dtype))
            else:
                parts.append(_chunk_gram(locals_, group, buffer))
        if not parts:
            blocks.append(torch.zeros((n, n), dtype=dtype, device=device))
        else:
            blocks.append(torch.stack(parts).sum(0) if len(parts) > 1 else parts[0])
    return torch.stack(blocks)


def _traced_gram(
    lists: Sequence[Sequence[Tensor]],
    block_of: Sequence[int] | None,
    n_blocks: int,
    pairs: Sequence[tuple[int, int]] | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """The Gram under ``torch.compile``: one converted product and sum per tensor and pair.

    The chunked eager form (slices copied into a buffer, a matmul per chunk) becomes hundreds of
    small kernels once traced; written per tensor, the compiler fuses the conversion, the
    products and the sums into a few loops that read each tensor once.
    """
    n = len(lists)
    count = len(lists[0]) if lists else 0
    wanted = list(pairs) if pairs is not None else [(i, j) for i in range(n) for j in range(i, n)]
    blocks = list(block_of) if block_of is not None else [0] * count
    out = torch.zeros((n_blocks, n, n), dtype=dtype, device=device)
    lists = [[torch.view_as_real(t) if t.is_complex() else t for t in ts] for ts in lists]
    for i, j in dict.fromkeys((min(p), max(p)) for p in wanted):
        for b in range(n_blocks):
            terms = [
                (lists[i][t].to(dtype) * lists[j][t].to(dtype)).sum()
                for t in range(count)
                if blocks[t] == b and lists[i][t].numel()
            ]
            if terms:
                value = torch.stack(terms).sum()
                out[b, i, j] = value
                out[b, j, i] = value
    return out


def _rows(lists: Sequence[Sequence[Tensor]], group: list[tuple[int, int, int]]) -> list[Tensor]:
    """The chunk of every list as one flat tensor in its own dtype (views when possible)."""
    if len(group) == 1:
        t, start, stop = group[0]
        return [tensors[t].reshape(-1)[start:stop] for tensors in lists]
    if all(start == 0 and stop == lists[0][t].numel() for t, start, stop in group):
        return [_flatten([tensors[t] for t, _, _ in group]) for tensors in lists]
    return [
        torch.cat([tensors[t].reshape(-1)[start:stop] for t, start, stop in group])
        for tensors in lists
    ]


def _chunk_dots(
    lists: Sequence[Sequence[Tensor]],
    group: list[tuple[int, int, int]],
    pairs: Sequence[tuple[int, int]],
    dtype: torch.dtype,
) -> Tensor:
    """The needed inner products of one chunk, each a dot on the data in its own dtype."""
    rows = _rows(lists, group)
    n = len(rows)
    out = rows[0].new_zeros((n, n), dtype=dtype)
    for i, j in pairs:
        out[i, j] = out[j, i] = torch.dot(rows[i], rows[j])
    return out


def _chunk_gram(
    lists: Sequence[Sequence[Tensor]], group: list[tuple[int, int, int]], buffer: Tensor
) -> Tensor:
    """``X X^T`` for one chunk: ``X`` holds the chunk of every list as a float64 row (written
    into ``buffer``, converted on the fly by ``copy_``)."""
    length = sum(stop - start for _, start, stop in group)
    x = buffer[:, :length]
    for row, source in zip(x, _rows(lists, group)):
        row.copy_(source)
    return x @ x.T


TINY = 1e-30
"""Smallest trusted squared norm per element of a float32 Gram summed in float32 lanes."""


def in_float32_range(entries: Tensor, squares: Tensor, numel: int) -> bool:
    """Whether inner products of float32 data summed in float32 are trustworthy: every entry
    finite (no float32 overflow) and every squared norm at least :data:`TINY` per element
    (below, squares near float32's underflow carry a relative error above ~1e-8; exact zeros
    included). Reads values on the host: for CPU tensors only (no device synchronisation)."""
    if not bool(torch.isfinite(entries).all()):
        return False
    return squares.numel() == 0 or bool((squares >= TINY * max(numel, 1)).all())


def _flatten(tensors: list[Tensor]) -> Tensor:
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    if len({t.dtype for t in tensors}) > 1:
        return torch.cat([t.reshape(-1).double() for t in tensors])
    return torch._C._nn.flatten_dense_tensors(tensors)  # type: ignore[no-any-return]
