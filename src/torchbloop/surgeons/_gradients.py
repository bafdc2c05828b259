"""Gradient capture and bookkeeping for the surgeons: one gradient list per loss.

Gradients are captured through ordinary ``Tensor.backward`` calls, one per loss, with each
parameter's ``.grad`` set aside before and put back after. ``backward`` (unlike
``torch.autograd.grad``) is what reentrant activation checkpointing
(``torch.utils.checkpoint.checkpoint(..., use_reentrant=True)``) and FSDP2's reduce-scatter
hooks are built for, so the gradients are exact under both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

GradList = list[Tensor | None]
"""One gradient per parameter, ``None`` where a loss does not reach the parameter."""


def capture_gradients(params: Sequence[Tensor], losses: Sequence[Tensor]) -> list[GradList]:
    """``d loss / d params`` for each loss, through ``Tensor.backward``; ``None`` where unused.

    The losses may share one forward graph (it is kept until the last loss). What the
    parameters' ``.grad`` held before is restored afterwards, also when a backward pass raises.
    The passes are plain ones (no ``inputs=``: autograd would prune a reentrant checkpoint's
    segment, whose parameters are not edges of the graph), so tensors OUTSIDE ``params`` that
    a loss reaches get that loss's gradient accumulated into their ``.grad``, as
    ``loss.backward()`` would.

    Args:
        params: the surgeon's parameters.
        losses: scalar losses, main first.

    Returns:
        One list per loss, aligned with ``params``.
    """
    live = [p for p in params if p.requires_grad]
    saved = [p.grad for p in live]
    out: list[GradList] = []
    try:
        for n, loss in enumerate(losses):
            for p in live:
                p.grad = None
            if live:
                torch.autograd.backward(loss, retain_graph=n < len(losses) - 1)
            out.append([p.grad if p.requires_grad else None for p in params])
    finally:
        for p, g in zip(live, saved):
            p.grad = g
    return out


def dense(g: Tensor | None, p: Tensor) -> Tensor:
    """``g``, or zeros shaped like ``p`` when ``g`` is ``None``."""
    return torch.zeros_like(p) if g is None else g


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
