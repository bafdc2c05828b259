"""Bloop's whole combination step in one call: direction and EMA update with fewer passes.

:class:`torchbloop.Bloop` needs, every step, the direction ``g_main + lam * pi(g_aux; e)`` and
the EMA update ``e <- (1 - rho) e + rho g_main``. Done as two calls (:func:`bloop_direction`,
then :func:`ema_update_`) that is one pass over ``e`` and ``g_main`` more than needed. On the CPU,
:func:`bloop_update_` folds the update into the pass that writes the direction ("paper" order)
or into the pass that computes the inner products ("code" order), so every buffer crosses the
memory bus about twice: once for the inner products, once for the rest.
"""

from __future__ import annotations

import operator
from typing import Literal

import torch
from torch import Tensor

from . import _blocked, _native
from ._types import Reducer, TensorList
from .bloop import BloopDirection, bloop_direction, bloop_direction_reference
from .ema import ema_update_, ema_update_reference
from .projection import projection_coefficient

EmaOrder = Literal["paper", "code"]


def bloop_update_(
    main_grads: TensorList,
    aux_grads: TensorList,
    ema: list[Tensor],
    *,
    lam: float,
    rho: float,
    ema_order: EmaOrder = "paper",
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> BloopDirection:
    """Bloop's direction and EMA update: ``bloop_direction`` and ``ema_update_`` in one call.

    With ``ema_order="paper"`` the direction projects on the EMA as it was, then the EMA takes
    ``g_main`` (Algorithm 1); with ``"code"`` the EMA is updated first and the direction
    projects on the new EMA. The results equal those of the two calls in that order (within
    rounding); on plain contiguous CPU tensors with ``out=aux_grads`` it makes two passes over
    memory instead of three. ``ema`` must not share tensors with the gradients.

    Args:
        main_grads: ``g_main``. aux_grads: ``g_aux``.
        ema: ``e``, updated in place.
        lam: ``lam >= 0``, weight of the projected auxiliary gradient.
        rho: ``rho`` in (0, 1], the EMA's weight of the new main gradient.
        ema_order: ``"paper"`` or ``"code"`` (see above).
        out: where to write the direction (``aux_grads`` saves memory); default new tensors.
        foreach: use the multi-tensor (or cache-blocked) kernels.
        reduce: sums the local inner products over a process group when the lists are shards.

    Returns:
        A :class:`BloopDirection` ``(direction, coef, skipped)``.

    Example:
        >>> import torch
        >>> g_main, g_aux = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
        >>> e = [torch.tensor([2.0, 0.0])]
        >>> bloop_update_(g_main, g_aux, e, lam=0.5, rho=0.5, out=g_aux).direction
        [tensor([1.0000, 0.5000])]
        >>> e
        [tensor([1.5000, 0.0000])]
    """
    if ema_order not in ("paper", "code"):
        raise ValueError(f"Invalid ema_order={ema_order!r}: must be 'paper' or 'code'")
    candidate = (
        foreach
        and out is not None
        and _same(out, aux_grads)
        and not _shares(ema, main_grads, aux_grads)
    )
    if candidate and _native.usable(main_grads, aux_grads, ema):
        assert out is not None
        coef, skipped = _native_update(main_grads, aux_grads, ema, lam, rho, ema_order, reduce)
        return BloopDirection(out, coef, skipped)
    if not (candidate and _blocked.blockable(main_grads, aux_grads, ema)):
        return bloop_update_composed_(
            main_grads,
            aux_grads,
            ema,
            lam=lam,
            rho=rho,
            ema_order=ema_order,
            out=out,
            foreach=foreach,
            reduce=reduce,
        )
    assert out is not None
    if ema_order == "code":
        cross, sq = _blocked.lerp_dot_terms(ema, main_grads, aux_grads, rho)
        dots = torch.stack([torch.stack(cross).sum(), torch.stack(sq).sum()])
        if reduce is not None:
            dots = reduce(dots)
        coef, skipped = projection_coefficient(dots[0], dots[1])
        _blocked.add_project_(main_grads, out, lam, ema, coef)
    else:
        terms = _blocked.dot_terms([(aux_grads, ema), (ema, ema)])
        dots = torch.stack([torch.stack(t).sum() for t in terms])
        if reduce is not None:
            dots = reduce(dots)
        coef, skipped = projection_coefficient(dots[0], dots[1])
        _blocked.add_project_(main_grads, out, lam, ema, coef, rho)
    return BloopDirection(out, coef, skipped)


def _native_update(
    main_grads: TensorList,
    aux_grads: TensorList,
    ema: list[Tensor],
    lam: float,
    rho: float,
    ema_order: EmaOrder,
    reduce: Reducer | None,
) -> tuple[Tensor, Tensor]:
    """The fused C kernel's two passes (see :mod:`._native`); the direction overwrites
    ``aux_grads``. Returns ``(coef, skipped)``."""
    lists = _native.prepare(main_grads, aux_grads, ema)
    code = ema_order == "code"
    cross, sq = _native.dots(lists, rho=rho if code else None)
    dots = torch.tensor([cross, sq], dtype=torch.float64)
    if reduce is not None:
        dots = reduce(dots)
    coef, skipped = projection_coefficient(dots[0], dots[1])
    _native.combine(lists, lam=lam, ncoef=-lam * float(coef), rho=None if code else rho)
    return coef.to(ema[0].dtype), skipped


def bloop_update_composed_(
    main_grads: TensorList,
    aux_grads: TensorList,
    ema: list[Tensor],
    *,
    lam: float,
    rho: float,
    ema_order: EmaOrder = "paper",
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> BloopDirection:
    """:func:`bloop_update_` as the plain composition of :func:`bloop_direction` and :func:`ema_update_`.

    The general path (any device, dtype mix, DTensor shards), and the one to hand to
    ``torch.compile``: it has no host synchronisation and no data-dependent branch, so
    TorchDynamo captures it as one graph and Inductor can fuse its passes.
    """
    if ema_order == "code":
        ema_update_(ema, main_grads, rho=rho, foreach=foreach)
    result = bloop_direction(
        main_grads, aux_grads, ema, lam=lam, out=out, foreach=foreach, reduce=reduce
    )
    if ema_order == "paper":
        ema_update_(ema, main_grads, rho=rho, foreach=foreach)
    return result


def bloop_update_reference(
    main_grads: TensorList,
    aux_grads: TensorList,
    ema: TensorList,
    *,
    lam: float,
    rho: float,
    ema_order: EmaOrder = "paper",
) -> tuple[list[Tensor], list[Tensor]]:
    """Slow reference for :func:`bloop_update_`: ``(direction, new_ema)`` in float64 arithmetic."""
    if ema_order == "code":
        new_ema = ema_update_reference(ema, main_grads, rho=rho)
        return bloop_direction_reference(main_grads, aux_grads, new_ema, lam=lam), new_ema
    direction = bloop_direction_reference(main_grads, aux_grads, ema, lam=lam)
    return direction, ema_update_reference(ema, main_grads, rho=rho)


def _same(a: TensorList, b: TensorList) -> bool:
    return a is b or (len(a) == len(b) and all(map(operator.is_, a, b)))


def _shares(ema: TensorList, *others: TensorList) -> bool:
    """Whether ``ema`` is one of the gradient lists (checked on the lists and their first tensors)."""
    return any(ema is grads or (ema and grads and ema[0] is grads[0]) for grads in others)


__all__ = ["bloop_update_", "bloop_update_composed_", "bloop_update_reference"]
