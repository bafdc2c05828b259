"""Data parallelism (DDP): averaging the two gradients over the ranks in one collective.

A surgeon needs every loss's gradient separately, and DDP averages only what lands in ``.grad``
during the first backward pass after a forward (and not at all under ``no_sync()``). Left to
DDP, the auxiliary gradients would stay local and the replicas would drift apart. So when a
process group with more than one rank is initialised, the surgeon averages all the gradients
itself, the way DDP would:

* the main and all K auxiliary gradients go into ONE flat buffer (accumulated in float32, or float64
  if a gradient is float64) and ONE ``all_reduce`` sums it; a mask of which gradients exist
  travels in the same buffer, so a parameter that a loss reaches on some ranks only is
  handled as DDP handles it (zero elsewhere);
* with ``aux_replicated=True`` (an auxiliary loss that depends on the parameters only, such as
  weight decay or a spectral-norm penalty, identical on every rank) the auxiliary gradient is
  not communicated at all;
* with gradient accumulation the averaging happens once, on the totals of the last call.

The result equals the single-process gradient on the concatenated batch when every rank's loss
is a mean over an equal share of it (the DDP convention). Every rank then holds the same
gradients, the same direction and the same EMA. With a model wrapped in
``DistributedDataParallel``, run the forward passes and ``surgeon.backward`` under
``model.no_sync()``: the surgeon's backward passes are ordinary ``Tensor.backward`` calls, so
without it DDP also all-reduces the gradient of the first one (the result is the same; the
communication is wasted).

Example:
    >>> import torch
    >>> from torchbloop.distributed import data_parallel_group
    >>> data_parallel_group("auto") is None  # no process group initialised here
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Union

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["ProcessGroupArg", "average_gradients_", "data_parallel_group"]

ProcessGroupArg = Union["dist.ProcessGroup", Literal["auto"], None]
"""``"auto"`` (the default group when one is initialised), a process group, or ``None`` (no sync)."""


def data_parallel_group(process_group: ProcessGroupArg) -> dist.ProcessGroup | None:
    """The group to average gradients over, or ``None`` when there is nothing to average.

    Args:
        process_group: ``"auto"``: the default group if ``torch.distributed`` is initialised
            with more than one rank; a ``ProcessGroup``: that group; ``None``: never average.

    Raises:
        ValueError: ``process_group`` is neither of these.
    """
    if process_group is None:
        return None
    if isinstance(process_group, str):
        if process_group != "auto":
            raise ValueError(
                f"Invalid process_group={process_group!r}: must be 'auto', a ProcessGroup or None"
            )
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = dist.group.WORLD
    else:
        group = process_group
    if group is None or dist.get_world_size(group) == 1:
        return None
    return group


def _flat_dtype(grads: Sequence[Tensor | None]) -> torch.dtype:
    return (
        torch.float64
        if any(g is not None and g.dtype == torch.float64 for g in grads)
        else torch.float32
    )


def average_gradients_(
    lists: Sequence[list[Tensor | None]],
    params: Sequence[Tensor],
    group: dist.ProcessGroup,
) -> list[list[Tensor | None]]:
    """Average aligned gradient lists over ``group`` with one ``all_reduce``.

    Gradients that exist locally are overwritten in place with the average; a missing one
    (``None``) becomes a new tensor if another rank has it, and stays ``None`` if no rank does.
    Costs one host synchronisation only when some local gradient is missing.

    Args:
        lists: gradient lists, each aligned with ``params`` (e.g. ``[main, aux]``).
        params: the parameters (for the shape, dtype and device of missing gradients).
        group: the process group (every rank must call this with the same structure).

    Returns:
        The averaged lists (same order).
    """
    entries = [g for grads in lists for g in grads]
    if not params:
        return [list(grads) for grads in lists]
    dtype = _flat_dtype(entries)
    device = params[0].device
    pieces: list[Tensor] = []
    present: list[float] = []
    for grads in lists:
        for g, p in zip(grads, params):
            present.append(0.0 if g is None else 1.0)
            if g is None:
                pieces.append(torch.zeros(p.numel(), dtype=dtype, device=device))
            else:
                pieces.append(g.reshape(-1).to(dtype))
    mask = torch.tensor(present, dtype=dtype, device=device)
    flat = torch.cat([*pieces, mask])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    world = dist.get_world_size(group)
    values = flat[: flat.numel() - mask.numel()].div_(world)
    anywhere = flat[flat.numel() - mask.numel() :].gt(0).tolist() if 0.0 in present else None
    out: list[list[Tensor | None]] = []
    offset = 0
    k = 0
    for grads in lists:
        averaged: list[Tensor | None] = []
        for g, p in zip(grads, params):
            chunk = values[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
            if g is not None:
                averaged.append(g.copy_(chunk))
            elif anywhere is not None and anywhere[k]:
                averaged.append(
                    chunk.to(dtype=p.dtype, memory_format=torch.contiguous_format, copy=True)
                )
            else:
                averaged.append(None)
            k += 1
        out.append(averaged)
    return out
