"""Gradient plumbing for the surgeons: computing, owning, densifying and accumulating."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

GradList = list[Tensor | None]
"""One gradient per parameter, ``None`` where a loss does not reach the parameter."""


def autograd_gradients(
    params: Sequence[Tensor], main: Tensor, aux: Tensor
) -> tuple[GradList, GradList]:
    """``(d main / d params, d aux / d params)`` with ``torch.autograd.grad``; ``None`` where unused.

    ``.grad`` is not touched. The main graph is retained so that both losses may share one
    forward pass. Parameters that do not require grad get ``None``.
    """
    live = [i for i, p in enumerate(params) if p.requires_grad]
    full_main: GradList = [None] * len(params)
    full_aux: GradList = [None] * len(params)
    if not live:
        return full_main, full_aux
    inputs = [params[i] for i in live]
    g_main = torch.autograd.grad(main, inputs, retain_graph=True, allow_unused=True)
    g_aux = torch.autograd.grad(aux, inputs, allow_unused=True)
    seen: set[int] = set()
    for i, gm, ga in zip(live, g_main, g_aux):
        full_main[i], full_aux[i] = owned(gm, seen), owned(ga, seen)
    return full_main, full_aux


def owned(g: Tensor | None, seen: set[int]) -> Tensor | None:
    """A gradient we may write into.

    Autograd may hand back expanded views or one tensor for several inputs (``a + b``); such
    results are copied so that writing the direction into one never changes another.
    """
    if g is None or g.is_sparse:
        return g
    if not g.is_contiguous():
        g = g.contiguous()
    ptr = g.untyped_storage().data_ptr()
    if ptr in seen:
        g = g.clone()
        ptr = g.untyped_storage().data_ptr()
    seen.add(ptr)
    return g


def dense(g: Tensor | None, p: Tensor) -> Tensor:
    """``g``, or zeros shaped like ``p`` when ``g`` is ``None``."""
    return torch.zeros_like(p, memory_format=torch.contiguous_format) if g is None else g


def accumulate_(acc: GradList, new: GradList) -> GradList:
    """``acc + new`` entry by entry, in place into ``acc``'s tensors (``None`` is zero)."""
    out: GradList = []
    for a, n in zip(acc, new):
        if a is None:
            out.append(n)
        elif n is None:
            out.append(a)
        else:
            out.append(a.add_(n))
    return out
