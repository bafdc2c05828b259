"""Bloop with one auxiliary loss: the public functions of the first API, over the contract.

:func:`bloop_direction` (projection only), :func:`bloop_update_` (direction and EMA update in
one call) and :func:`bloop_update_composed_` (the same on torch ops only, the form handed to
``torch.compile``) are thin wrappers of a :class:`~.contract.SurgeryStep` with
:class:`~.bloop.BloopFormula` at K = 1; their results equal the K = 1 contract's exactly and
today's to rounding. The ``..._reference`` twins are the formula in float64 on one vector.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._reductions import accumulation_dtype
from ._reference import flat64, project_out64, unflat
from ._types import Reducer, TensorList
from .bloop import BloopFormula, EmaOrder
from .contract import SurgeryStep
from .ema import ema_update_reference


class BloopDirection(NamedTuple):
    """The result of :func:`bloop_direction` and :func:`bloop_update_`."""

    direction: list[Tensor]
    """``g_main + lam * pi(g_aux; e)``, one tensor per parameter."""
    coef: Tensor
    """``<g_aux, e> / ||e||^2`` (0-dim; 0 when the projection was skipped)."""
    skipped: Tensor
    """0-dim bool: ``||e||^2`` was zero or not finite, so nothing was projected out."""


def _run(step: SurgeryStep, dtype: torch.dtype) -> BloopDirection:
    result = step.apply()
    coef = result.info["coef"][0, 0, 0].to(dtype)
    return BloopDirection(result.direction, coef, result.info["skipped"][0, 0])


def bloop_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    ema: TensorList,
    *,
    lam: float,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> BloopDirection:
    """Bloop's update direction ``g_main + lam * pi(g_aux; e)`` (the EMA is not changed).

    ``pi(a; e) = a - (<a, e> / ||e||^2) e``. The inner products are global over all tensors
    of the lists and accumulated in float64. When ``||e||^2`` is zero or not finite the
    projection is skipped for this call (the direction is then Mixed's) and ``skipped`` says
    so. No host synchronisation.

    Args:
        main_grads: ``g_main``, the main-loss gradients.
        aux_grads: ``g_aux``, the auxiliary-loss gradients.
        ema: ``e``, what ``g_aux`` is projected against (the EMA of main gradients; pass
            ``main_grads`` itself for the full-batch rule, Eq. 3).
        lam: ``lam >= 0``, the weight of the projected auxiliary gradient.
        out: where to write the direction; may be ``aux_grads`` itself (saves memory) or
            ``main_grads``. Default: new tensors.
        foreach: use the multi-tensor kernels.
        reduce: sums the local inner products over a process group when the lists are shards.

    Returns:
        A :class:`BloopDirection` ``(direction, coef, skipped)``.

    Raises:
        TypeError, ValueError: ``lam`` is not a finite number >= 0.

    Example:
        >>> import torch
        >>> g_main, g_aux = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
        >>> bloop_direction(g_main, g_aux, ema=g_main, lam=0.5).direction
        [tensor([1.0000, 0.5000])]
    """
    step = SurgeryStep(
        BloopFormula(update_ema=False, leak=False),
        [main_grads, aux_grads],
        [list(ema)],
        hyper={"lam": lam, "rho": 1.0},
        out=out,
        foreach=foreach,
        reduce=reduce,
        norms=False,
    )
    return _run(step, accumulation_dtype(main_grads, aux_grads, ema))


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
    """Bloop's direction and EMA update in one call (two passes over memory).

    With ``ema_order="paper"`` the direction projects on the EMA as it was, then the EMA takes
    ``g_main`` (Algorithm 1); with ``"code"`` the EMA is updated first and the direction
    projects on the new EMA. On plain contiguous CPU float32/float64 tensors both passes run in
    the fused C kernel. ``ema`` must not share tensors with the gradients.

    Args:
        main_grads: ``g_main``. aux_grads: ``g_aux``.
        ema: ``e``, updated in place: ``e <- (1 - rho) e + rho g_main``.
        lam: ``lam >= 0``, weight of the projected auxiliary gradient.
        rho: ``rho`` in (0, 1], the EMA's weight of the new main gradient.
        ema_order: ``"paper"`` or ``"code"`` (see above).
        out: where to write the direction (``aux_grads`` saves memory); default new tensors.
        foreach: use the multi-tensor kernels (torch-op path).
        reduce: sums the local inner products over a process group when the lists are shards.

    Returns:
        A :class:`BloopDirection` ``(direction, coef, skipped)``.

    Raises:
        TypeError, ValueError: invalid ``lam``, ``rho`` or ``ema_order``, or an ``ema`` that
            shares tensors with the gradients; nothing is changed.

    Example:
        >>> import torch
        >>> g_main, g_aux = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
        >>> e = [torch.tensor([2.0, 0.0])]
        >>> bloop_update_(g_main, g_aux, e, lam=0.5, rho=0.5, out=g_aux).direction
        [tensor([1.0000, 0.5000])]
        >>> e
        [tensor([1.5000, 0.0000])]
    """
    return _update(main_grads, aux_grads, ema, lam, rho, ema_order, out, foreach, reduce, True)


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
    """:func:`bloop_update_` on torch ops only (never the C kernel).

    The general path (any device, dtype mix, DTensor shards), and the one to hand to
    ``torch.compile``: it has no host synchronisation and no data-dependent branch, so
    TorchDynamo captures it as one graph and Inductor can fuse its passes.
    """
    return _update(main_grads, aux_grads, ema, lam, rho, ema_order, out, foreach, reduce, False)


def _update(
    main_grads: TensorList,
    aux_grads: TensorList,
    ema: list[Tensor],
    lam: float,
    rho: float,
    ema_order: EmaOrder,
    out: list[Tensor] | None,
    foreach: bool,
    reduce: Reducer | None,
    kernel: bool,
) -> BloopDirection:
    step = SurgeryStep(
        BloopFormula(ema_order, leak=False),
        [main_grads, aux_grads],
        [ema],
        hyper={"lam": lam, "rho": rho},
        out=out,
        foreach=foreach,
        reduce=reduce,
        kernel=kernel,
        norms=False,
    )
    return _run(step, accumulation_dtype(main_grads, aux_grads, ema))


def bloop_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, ema: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow, obviously correct reference for :func:`bloop_direction` (float64, one vector)."""
    g_main, g_aux, e = flat64(main_grads), flat64(aux_grads), flat64(ema)
    return unflat(g_main + lam * project_out64(g_aux, e), main_grads)


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
    new_ema = ema_update_reference(ema, main_grads, rho=rho)
    seen = new_ema if ema_order == "code" else ema
    return bloop_direction_reference(main_grads, aux_grads, seen, lam=lam), new_ema


__all__ = [
    "BloopDirection",
    "bloop_direction",
    "bloop_direction_reference",
    "bloop_update_",
    "bloop_update_composed_",
    "bloop_update_reference",
]
