"""The stages of :meth:`Surgeon.backward`, each a small function that can be tested alone.

``backward`` runs, in this order: :func:`check_losses`, :func:`capture`, :func:`unscale`,
:class:`Accumulator` (gradient accumulation), :func:`all_reduce` (data parallelism), then the
surgeon's surgery stage (finiteness and the method's combination, see ``Surgeon._surgery``),
and :func:`write_grad`. Every stage works on ``K + 1`` aligned gradient lists, main first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.distributed as dist
from torch import Tensor

from .._validation import check_grad_list, check_loss
from ..amp import rescale_, unscale_
from ..distributed.data_parallel import average_gradients_
from ._gradients import GradList, accumulate_, capture_gradients

__all__ = [
    "Accumulator",
    "all_reduce",
    "capture",
    "check_captured",
    "check_losses",
    "loss_names",
    "unscale",
    "write_grad",
]


def loss_names(k: int) -> list[str]:
    """How errors name the losses: ``main``, then ``aux`` (K = 1) or ``aux[0]``.. (K > 1)."""
    return ["main", "aux"] if k == 1 else ["main", *(f"aux[{j}]" for j in range(k))]


def check_losses(main: object, aux: object, k: int) -> list[Tensor]:
    """``[main, aux_1, ..., aux_K]``, each a scalar tensor that requires grad.

    Raises:
        TypeError, ValueError: a loss is not a scalar tensor requiring grad, or ``aux`` does
            not hold the surgeon's number of auxiliary losses.
    """
    if isinstance(aux, Tensor):
        auxes: list[object] = [aux]
    elif isinstance(aux, Sequence) and not isinstance(aux, (str, bytes)):
        auxes = list(aux)
    else:
        raise TypeError(
            f"Invalid aux: expected a scalar Tensor, got {type(aux).__name__} (several auxiliary "
            "losses: a list of scalar Tensors)"
        )
    if len(auxes) != k:
        raise ValueError(
            f"Invalid aux: got {len(auxes)} auxiliary losses, the surgeon was built for {k} "
            f"(one per lam)"
        )
    names = loss_names(k)
    return [check_loss(name, loss) for name, loss in zip(names, [main, *auxes])]


def capture(
    params: Sequence[Tensor],
    losses: Sequence[Tensor],
    *,
    allow_unused: bool,
) -> list[GradList]:
    """The gradients of every loss (see :func:`capture_gradients`), checked.

    Raises:
        ValueError: a loss reaches none of the parameters (naming it); unless ``allow_unused``,
            also when only some of the losses reach them. ``.grad`` is restored first.
        TypeError, ValueError: a gradient is sparse.
    """
    return check_captured(params, capture_gradients(params, losses), allow_unused=allow_unused)


def check_captured(
    params: Sequence[Tensor], grads: list[GradList], *, allow_unused: bool
) -> list[GradList]:
    """Check the captured gradient lists (main first): see :func:`capture`."""
    names = loss_names(len(grads) - 1)
    unused = [name for name, g in zip(names, grads) if all(x is None for x in g)]
    if len(unused) == len(grads) or (unused and not allow_unused):
        raise ValueError(
            f"Invalid {' and '.join(unused)} loss: it reaches none of the surgeon's "
            f"{len(params)} parameters (a loss of another model, or all of them frozen?)"
            + ("" if len(unused) == len(grads) else "; pass allow_unused=True if this is intended")
        )
    for name, g in zip(names, grads):
        check_grad_list(f"{name} gradient", g, params)
    return grads


def unscale(grads: Sequence[GradList], scale: Tensor | None) -> None:
    """Divide the gradients of the scaled losses by the loss scale, in place."""
    if scale is not None:
        for g in grads:
            unscale_(g, scale)


class Accumulator:
    """Sums the gradient lists of micro-batches until the final call of a step."""

    def __init__(self) -> None:
        self.pending: list[GradList] | None = None

    def add(self, grads: list[GradList]) -> list[GradList]:
        """The totals so far including ``grads`` (in place into the pending tensors)."""
        if self.pending is None:
            return grads
        return [accumulate_(a, g) for a, g in zip(self.pending, grads)]

    def hold(self, totals: list[GradList]) -> None:
        """Keep ``totals`` for the next micro-batch."""
        self.pending = totals

    def clear(self) -> bool:
        """Forget the pending totals; returns whether there were any."""
        had = self.pending is not None
        self.pending = None
        return had


def all_reduce(
    grads: list[GradList],
    params: Sequence[Tensor],
    group: dist.ProcessGroup | None,
    *,
    replicated: Sequence[bool],
) -> list[GradList]:
    """Average the lists not marked ``replicated`` over ``group`` in ONE collective."""
    if group is None:
        return grads
    moving = [i for i, r in enumerate(replicated) if not r]
    averaged = average_gradients_([grads[i] for i in moving], params, group)
    out = list(grads)
    for i, a in zip(moving, averaged):
        out[i] = a
    return out


def write_grad(params: Sequence[Tensor], directions: GradList, scale: Tensor | None = None) -> None:
    """Put each direction into ``.grad`` (times ``scale`` when a loss scaler is used).

    An existing ``.grad`` is overwritten in place (keeping its memory format); a missing one
    becomes the direction itself. Parameters without a direction keep their ``.grad``.
    """
    if scale is not None:
        rescale_(directions, scale)
    for p, d in zip(params, directions):
        if d is None:
            continue
        if p.grad is None:
            p.grad = d
        else:
            p.grad.copy_(d)
