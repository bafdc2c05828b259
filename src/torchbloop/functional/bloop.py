"""Bloop's direction: main gradient plus the aux gradient projected orthogonally to the EMA.

``d = g_main + lam * pi(g_aux; e)`` with ``pi(a; e) = a - (<a, e> / ||e||^2) e``
(Hsieh et al., ICML 2024, Eq. 5; Eq. 3 when ``e = g_main``).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from . import _blocked
from ._combination import add_scaled_, axpby
from ._reductions import global_dots
from ._reference import flat64, project_out64, unflat
from ._types import Reducer, TensorList
from .projection import projection_coefficient


class BloopDirection(NamedTuple):
    """The result of :func:`bloop_direction`."""

    direction: list[Tensor]
    """``g_main + lam * pi(g_aux; e)``, one tensor per parameter."""
    coef: Tensor
    """``<g_aux, e> / ||e||^2`` (0-dim; 0 when the projection was skipped)."""
    skipped: Tensor
    """0-dim bool: ``||e||^2`` was zero or not finite, so nothing was projected out."""


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
    """Bloop's update direction ``g_main + lam * pi(g_aux; e)``.

    The inner products are global over all tensors of the lists and accumulated in at least
    float32. When ``||e||^2`` is zero or not finite the projection is skipped for this call
    (the direction is then Mixed's) and ``skipped`` says so. No host synchronisation.

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

    Example:
        >>> import torch
        >>> g_main, g_aux = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
        >>> bloop_direction(g_main, g_aux, ema=g_main, lam=0.5).direction
        [tensor([1.0000, 0.5000])]
    """
    dots = global_dots([(aux_grads, ema), (ema, ema)], reduce=reduce)
    coef, skipped = projection_coefficient(dots[0], dots[1])
    if (
        out is not None
        and foreach
        and _same(out, aux_grads)
        and _blocked.blockable(main_grads, aux_grads, ema)
    ):
        _blocked.add_project_(main_grads, out, lam, ema, coef)  # one pass per block on the CPU
        return BloopDirection(out, coef, skipped)
    direction = axpby(1.0, main_grads, lam, aux_grads, out=out, foreach=foreach)
    if lam != 0:
        add_scaled_(direction, coef * (-lam), ema, foreach=foreach)
    return BloopDirection(direction, coef, skipped)


def _same(a: TensorList, b: TensorList) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def bloop_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, ema: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow, obviously correct reference for :func:`bloop_direction` (float64, one vector)."""
    g_main, g_aux, e = flat64(main_grads), flat64(aux_grads), flat64(ema)
    return unflat(g_main + lam * project_out64(g_aux, e), main_grads)


__all__ = ["BloopDirection", "bloop_direction", "bloop_direction_reference"]
