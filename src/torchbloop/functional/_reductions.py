"""Global inner products over lists of tensors, accumulated in at least float32."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _blocked
from ._types import Reducer, TensorList


def accumulation_dtype(*lists: TensorList) -> torch.dtype:
    """The dtype inner products are accumulated in: float64 if any input is, else float32."""
    for tensors in lists:
        for t in tensors:
            if t.dtype == torch.float64:
                return torch.float64
    return torch.float32


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor, the tensor itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _dot(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    a, b = _local(a), _local(b)
    if a.dtype != dtype:
        a = a.to(dtype)
    if b.dtype != dtype:
        b = b.to(dtype)
    return torch.dot(a.reshape(-1), b.reshape(-1))


def global_dots(
    pairs: Sequence[tuple[TensorList, TensorList]],
    *,
    dtype: torch.dtype | None = None,
    reduce: Reducer | None = None,
) -> Tensor:
    """Inner products ``<a, b>`` over all tensors of each pair of lists, stacked.

    Each inner product treats its two lists as one long vector (it is global over all
    parameters, not per tensor). Products are accumulated in ``dtype`` (default: float32, or
    float64 when an input is float64), whatever the dtype of the inputs, and no host
    synchronisation happens.

    Args:
        pairs: ``[(a_1, b_1), (a_2, b_2), ...]``; ``a_k`` and ``b_k`` are aligned lists.
        dtype: accumulation dtype; at least float32 is recommended.
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
    acc = dtype or accumulation_dtype(*(x for pair in pairs for x in pair))
    fast = _blocked_dots(pairs, acc)
    if fast is not None:
        return reduce(fast) if reduce is not None else fast
    device = _first_device(pairs)
    results = []
    for a, b in pairs:
        if len(a) != len(b):
            raise ValueError(
                f"Invalid pair: lists of lengths {len(a)} and {len(b)} must be aligned"
            )
        if a is b:
            terms = [_dot(x, x, acc) for x in a]
        else:
            terms = [_dot(x, y, acc) for x, y in zip(a, b)]
        results.append(
            torch.stack(terms).sum() if terms else torch.zeros((), dtype=acc, device=device)
        )
    out = torch.stack(results)
    return reduce(out) if reduce is not None else out


def _blocked_dots(
    pairs: Sequence[tuple[TensorList, TensorList]], acc: torch.dtype
) -> Tensor | None:
    """The cache-blocked CPU path of :func:`global_dots`, or None where it does not apply."""
    lists = [x for pair in pairs for x in pair]
    if not lists[0] or not _blocked.blockable(*lists) or any(t.dtype != acc for t in lists[0]):
        return None
    terms = _blocked.dot_terms(pairs)
    return torch.stack([torch.stack(t).sum() for t in terms])


def global_dots_reference(
    pairs: Sequence[tuple[TensorList, TensorList]], *, reduce: Reducer | None = None
) -> Tensor:
    """Slow reference for :func:`global_dots`: flatten, concatenate, float64 dot."""
    out = []
    for a, b in pairs:
        fa = (
            torch.cat([_local(x).reshape(-1).double() for x in a]) if a else torch.zeros(0).double()
        )
        fb = (
            torch.cat([_local(x).reshape(-1).double() for x in b]) if b else torch.zeros(0).double()
        )
        out.append((fa * fb).sum())
    result = torch.stack(out)
    return reduce(result) if reduce is not None else result


def _first_device(pairs: Sequence[tuple[TensorList, TensorList]]) -> torch.device:
    for a, b in pairs:
        for t in (*a, *b):
            return _local(t).device
    return torch.device("cpu")
