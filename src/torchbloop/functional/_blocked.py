"""Cache-blocked CPU kernels for the passes that touch whole gradients.

On the CPU, ``torch._foreach_*`` ops are loops of single-tensor kernels: each op streams every
tensor through memory before the next op starts, so a sequence of ``k`` ops over lists larger
than the last-level cache costs ``k`` trips to DRAM. Bloop's step is a few such ops (two inner
products, then a linear combination and the EMA update). Here the ops are reordered so that all
of them run on one block of each tensor (a slice small enough to stay in cache) before the next
block: the data then comes from DRAM about once per pass, which is the memory-traffic floor of
eager execution. Tensors too small for blocking to matter go through the multi-tensor kernels
(or, for inner products, one flattening copy per bucket), which keeps the per-tensor overhead low.

Only plain, contiguous CPU tensors of one dtype take these paths (:func:`blockable`); anything
else (CUDA, DTensor, mixed dtypes, non-contiguous views) keeps the multi-tensor code, which is
already the right choice on accelerators. Results equal the multi-tensor code within rounding
(the same operations, summed in a different order).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

BLOCK = 1 << 18
"""Elements per block (1 MiB of float32): three such blocks stay in cache between the ops."""

SMALL = 1 << 16
"""Tensors with fewer elements use multi-tensor kernels instead of per-block Python calls."""

TINY = 1 << 12
"""Inner products over tensors smaller than this go through one flattening copy per bucket (the
copy costs less than a kernel call per tensor); larger ones get one ``torch.dot`` each."""

BUCKET = 1 << 18
"""Small tensors are processed in buckets of about this many elements (multi-tensor kernels on
one bucket at a time, so that it stays in cache; one flattening copy per bucket for inner products)."""


def blockable(*lists: Sequence[Tensor]) -> bool:
    """True when the lists are aligned plain contiguous CPU tensors of equal sizes and dtypes."""
    first = lists[0]
    if any(len(tensors) != len(first) for tensors in lists):
        return False
    for t in first:
        if type(t) is not Tensor or not t.is_cpu or not t.is_contiguous():
            return False
    for tensors in lists[1:]:
        if tensors is first:
            continue
        for t, f in zip(tensors, first):
            if type(t) is not Tensor or not t.is_cpu or t.dtype != f.dtype:
                return False
            if t.numel() != f.numel() or not t.is_contiguous():
                return False
    return True


def split_sizes(tensors: Sequence[Tensor]) -> tuple[list[int], list[int]]:
    """Indices of the tensors that are blocked (large) and of those that are not (small)."""
    large: list[int] = []
    small: list[int] = []
    for i, t in enumerate(tensors):
        (large if t.numel() >= SMALL else small).append(i)
    return large, small


def blocks(tensors: Sequence[Tensor]) -> Iterator[tuple[Tensor, ...]]:
    """Aligned 1-D blocks (views) of equally sized contiguous tensors."""
    return zip(*(t.view(-1).split(BLOCK) for t in tensors))


def buckets(index: list[int], tensors: Sequence[Tensor]) -> Iterator[list[int]]:
    """Consecutive groups of ``index`` holding at most about :data:`BUCKET` elements each."""
    group: list[int] = []
    size = 0
    for i in index:
        group.append(i)
        size += tensors[i].numel()
        if size >= BUCKET:
            yield group
            group, size = [], 0
    if group:
        yield group


def dot_terms(pairs: Sequence[tuple[Sequence[Tensor], Sequence[Tensor]]]) -> list[list[Tensor]]:
    """Partial inner products of each pair, block by block, every pair on a block in turn.

    A list that appears in several pairs (``e`` in ``<g, e>`` and ``<e, e>``) is read from
    memory once per block instead of once per pair. Inputs must satisfy :func:`blockable`.
    """
    lists = _distinct([x for pair in pairs for x in pair])
    slot = {id(x): k for k, x in enumerate(lists)}
    where = [(slot[id(a)], slot[id(b)]) for a, b in pairs]
    terms: list[list[Tensor]] = [[] for _ in pairs]
    large, small = split_sizes(lists[0])
    for i in large:
        for chunk in blocks([x[i] for x in lists]):
            for k, (u, v) in enumerate(where):
                terms[k].append(torch.dot(chunk[u], chunk[v]))
    for group in buckets(small, lists[0]):
        tiny: list[int] = []
        for i in group:
            if lists[0][i].numel() < TINY:
                tiny.append(i)
                continue
            views = [x[i].view(-1) for x in lists]
            for k, (u, v) in enumerate(where):
                terms[k].append(torch.dot(views[u], views[v]))
        if not tiny:
            continue
        flats = [torch._utils._flatten_dense_tensors([x[i] for i in tiny]) for x in lists]
        for k, (u, v) in enumerate(where):
            terms[k].append(torch.dot(flats[u], flats[v]))
    return terms


def add_project_(
    main: Sequence[Tensor],
    out: Sequence[Tensor],
    lam: float,
    ema: Sequence[Tensor] | None = None,
    coef: Tensor | None = None,
    rho: float | None = None,
) -> None:
    """``out <- main + lam * out - (lam * coef) * ema``, then optionally ``ema <- lerp(ema, main, rho)``.

    One pass per block: ``main``, ``out`` and ``ema`` are read once and written once. ``coef``
    is a 0-dim tensor (no host synchronisation); ``ema``/``coef`` may be omitted (Mixed's
    direction). Inputs must satisfy :func:`blockable`.
    """
    neg = None if ema is None or coef is None or lam == 0 else coef * (-lam)
    large, small = split_sizes(main)
    for i in large:
        if ema is None:
            for m, o in blocks([main[i], out[i]]):
                torch.add(m, o, alpha=lam, out=o)
            continue
        for m, o, e in blocks([main[i], out[i], ema[i]]):
            torch.add(m, o, alpha=lam, out=o)
            if neg is not None:
                o.addcmul_(e, neg)
            if rho is not None:
                e.lerp_(m, rho)
    for group in buckets(small, main):  # a bucket at a time, so that it stays in cache
        s_main = [main[i] for i in group]
        s_out = [out[i] for i in group]
        if lam != 1:
            torch._foreach_mul_(s_out, lam)
        torch._foreach_add_(s_out, s_main)
        if ema is None:
            continue
        s_ema = [ema[i] for i in group]
        if neg is not None:
            torch._foreach_addcmul_(s_out, s_ema, [neg] * len(group))  # type: ignore[arg-type]
        if rho is not None:
            torch._foreach_lerp_(s_ema, s_main, rho)


def lerp_dot_terms(
    ema: Sequence[Tensor], main: Sequence[Tensor], aux: Sequence[Tensor], rho: float
) -> tuple[list[Tensor], list[Tensor]]:
    """``ema <- lerp(ema, main, rho)`` and the partial ``<aux, ema>``, ``<ema, ema>`` of the result.

    The "code" order of Bloop: update the EMA, then project on it; one pass per block.
    """
    cross: list[Tensor] = []
    sq: list[Tensor] = []
    large, small = split_sizes(ema)
    for i in large:
        for e, m, a in blocks([ema[i], main[i], aux[i]]):
            e.lerp_(m, rho)
            cross.append(torch.dot(a, e))
            sq.append(torch.dot(e, e))
    for group in buckets(small, ema):
        torch._foreach_lerp_([ema[i] for i in group], [main[i] for i in group], rho)
        g_aux, g_ema = [aux[i] for i in group], [ema[i] for i in group]
        terms = dot_terms([(g_aux, g_ema), (g_ema, g_ema)])
        cross += terms[0]
        sq += terms[1]
    return cross, sq


def _distinct(lists: list[Sequence[Tensor]]) -> list[Sequence[Tensor]]:
    seen: dict[int, Sequence[Tensor]] = {}
    for x in lists:
        seen.setdefault(id(x), x)
    return list(seen.values())
