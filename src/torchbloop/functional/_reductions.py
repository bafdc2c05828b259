"""Global inner products over lists of tensors, accumulated in float64."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _gram
from ._types import Reducer, TensorList


def accumulation_dtype(*lists: TensorList) -> torch.dtype:
    """The dtype inner products are returned in: float64 if any input is, else float32."""
    for tensors in lists:
        for t in tensors:
            if t.dtype == torch.float64:
                return torch.float64
    return torch.float32


def global_dots(
    pairs: Sequence[tuple[TensorList, TensorList]],
    *,
    dtype: torch.dtype | None = None,
    reduce: Reducer | None = None,
) -> Tensor:
    """Inner products ``<a, b>`` over all tensors of each pair of lists, stacked.

    Each inner product treats its two lists as one long vector (it is global over all
    parameters, not per tensor). Products are accumulated in float64 (one read of each
    distinct list, see :mod:`._gram`) and returned in ``dtype`` (default: float32, or float64
    when an input is float64); no host synchronisation happens.

    Args:
        pairs: ``[(a_1, b_1), (a_2, b_2), ...]``; ``a_k`` and ``b_k`` are aligned lists.
        dtype: the result's dtype.
        reduce: applied once to the stacked local results (see :data:`Reducer`).

    Returns:
        A 1-D tensor ``[<a_1, b_1>, <a_2, b_2>, ...]``.

    Example:
        >>> import torch
        >>> from torchbloop.functional import global_dots
        >>> a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
        >>> global_dots([(a, a)])
        tensor([14.])
    """
    if not pairs:
        raise ValueError("Invalid pairs=[]: need at least one pair of tensor lists")
    for a, b in pairs:
        if len(a) != len(b):
            raise ValueError(
                f"Invalid pair: lists of lengths {len(a)} and {len(b)} must be aligned"
            )
    lists: list[TensorList] = []
    slot: dict[int, int] = {}
    where = []
    for a, b in pairs:
        for x in (a, b):
            if id(x) not in slot:
                slot[id(x)] = len(lists)
                lists.append(x)
        where.append((slot[id(a)], slot[id(b)]))
    acc = dtype or accumulation_dtype(*lists)
    if len({len(x) for x in lists}) > 1:  # pairs over different parameter lists
        out = torch.stack([global_dots([pair], dtype=acc)[0] for pair in pairs])
    else:
        g = _gram.gram(lists)[0]
        out = torch.stack([g[i, j] for i, j in where]).to(acc)
    return reduce(out) if reduce is not None else out


def global_dots_reference(
    pairs: Sequence[tuple[TensorList, TensorList]], *, reduce: Reducer | None = None
) -> Tensor:
    """Slow reference for :func:`global_dots`: flatten, concatenate, float64 dot."""
    out = []
    for a, b in pairs:
        fa = (
            torch.cat([_gram.local(x).reshape(-1).double() for x in a])
            if a
            else torch.zeros(0).double()
        )
        fb = (
            torch.cat([_gram.local(x).reshape(-1).double() for x in b])
            if b
            else torch.zeros(0).double()
        )
        out.append((fa * fb).sum())
    result = torch.stack(out)
    return reduce(result) if reduce is not None else result
