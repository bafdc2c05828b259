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
) -> Tensor:
    """``[n_blocks, n, n]``: ``G[b, i, j] = sum over the tensors t of block b of <lists[i][t], lists[j][t]>``.

    Tensors may be DTensors (their local shards are used) or complex (real inner product).
    """
    locals_ = [[local(t) for t in tensors] for tensors in lists]
    n = len(locals_)
    first = locals_[0]
    device = first[0].device if first else torch.device("cpu")
    dtype = gram_dtype(device)
    sizes = [t.numel() for t in first]
    chunk = CHUNK if device.type == "cpu" else CHUNK_ACCELERATOR
    members: list[list[int]] = [[] for _ in range(n_blocks)]
    for t, b in enumerate(block_of if block_of is not None else [0] * len(first)):
        if sizes[t]:
            members[b].append(t)
    blocks = []
    for index in members:
        parts = [_chunk_gram(locals_, group, dtype) for group in _segments(sizes, index, chunk)]
        if not parts:
            blocks.append(torch.zeros((n, n), dtype=dtype, device=device))
        else:
            blocks.append(torch.stack(parts).sum(0) if len(parts) > 1 else parts[0])
    return torch.stack(blocks)


def _chunk_gram(
    lists: Sequence[Sequence[Tensor]], group: list[tuple[int, int, int]], dtype: torch.dtype
) -> Tensor:
    """``X X^T`` for one chunk: ``X`` holds the chunk of every list as a float64 row."""
    whole = all(start == 0 and stop == lists[0][t].numel() for t, start, stop in group)
    if whole:  # small tensors: one C++ flattening call per list
        rows = [_flatten([tensors[t] for t, _, _ in group]) for tensors in lists]
    else:
        rows = [
            torch.cat([tensors[t].reshape(-1)[start:stop] for t, start, stop in group])
            if len(group) > 1
            else tensors[group[0][0]].reshape(-1)[group[0][1] : group[0][2]]
            for tensors in lists
        ]
    x = torch.stack(rows)
    if x.dtype != dtype:
        x = x.to(dtype)
    return x @ x.T


def _flatten(tensors: list[Tensor]) -> Tensor:
    if len(tensors) == 1:
        return tensors[0].reshape(-1)
    if len({t.dtype for t in tensors}) > 1:
        return torch.cat([t.reshape(-1).double() for t in tensors])
    return torch._C._nn.flatten_dense_tensors(tensors)
