"""Dynamic Barrier, the lam-variant the paper runs (Gong and Liu, 2021; method.md section 2).

``d = mu * g_main + lam * g_aux`` with ``mu = max(1 - lam <g_main, g_aux> / ||g_main||^2, 0)``:
Bloop without EMA whose coefficient ``r = <g_aux, g_main> / ||g_main||^2`` is clipped at
``1 / lam``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._combination import axpby
from ._reductions import global_dots
from ._reference import flat64, unflat
from ._types import Reducer, TensorList
from .projection import projection_coefficient


def dynamic_barrier_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    lam: float,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> list[Tensor]:
    """``max(1 - lam <g_main, g_aux> / ||g_main||^2, 0) * g_main + lam * g_aux``.

    When ``g_main`` is zero its coefficient is irrelevant and taken as 1 (no 0/0).

    Args:
        main_grads: ``g_main``. aux_grads: ``g_aux``. lam: ``lam >= 0``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> dynamic_barrier_direction([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], lam=1.0)
        [tensor([1., 1.])]
    """
    dots = global_dots([(main_grads, aux_grads), (main_grads, main_grads)], reduce=reduce)
    ratio, _ = projection_coefficient(dots[0], dots[1])
    mu = torch.clamp(1.0 - lam * ratio, min=0.0)
    return axpby(mu, main_grads, lam, aux_grads, out=out, foreach=foreach)


def dynamic_barrier_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow reference for :func:`dynamic_barrier_direction`."""
    g_main, g_aux = flat64(main_grads), flat64(aux_grads)
    norm2 = float(g_main @ g_main)
    mu = 1.0 if norm2 == 0.0 else max(1.0 - lam * float(g_main @ g_aux) / norm2, 0.0)
    return unflat(mu * g_main + lam * g_aux, main_grads)
