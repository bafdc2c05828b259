"""PCGrad for two objectives, lam-weighted as the paper runs it (Yu et al., 2020).

If ``<g_main, g_aux> >= 0``: ``d = g_main + lam * g_aux``; otherwise each gradient is projected
orthogonally to the other: ``d = pi(g_main; g_aux) + lam * pi(g_aux; g_main)``.
"""

from __future__ import annotations

from torch import Tensor

from ._combination import axpby
from ._reductions import global_dots
from ._reference import flat64, project_out64, unflat
from ._types import Reducer, TensorList
from .projection import projection_coefficient


def pcgrad_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    lam: float,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> list[Tensor]:
    """Two-objective PCGrad: symmetric projection on conflict, plain sum otherwise.

    Written as ``A * g_main + B * g_aux`` with ``A = 1 - lam * s_m`` and ``B = lam - s_a``,
    where on conflict ``s_m = <g_m, g_a> / ||g_m||^2`` and ``s_a = <g_m, g_a> / ||g_a||^2``
    (both 0 otherwise), so no host synchronisation is needed.

    Args:
        main_grads: ``g_main``. aux_grads: ``g_aux``. lam: ``lam >= 0``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> pcgrad_direction([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], lam=1.0)
        [tensor([0.5000, 1.5000])]
    """
    dots = global_dots(
        [(main_grads, aux_grads), (main_grads, main_grads), (aux_grads, aux_grads)], reduce=reduce
    )
    conflict = dots[0] < 0
    s_m, _ = projection_coefficient(dots[0], dots[1])
    s_a, _ = projection_coefficient(dots[0], dots[2])
    zero = s_m.new_zeros(())
    a = 1.0 - lam * s_m.where(conflict, zero)
    b = lam - s_a.where(conflict, zero)
    return axpby(a, main_grads, b, aux_grads, out=out, foreach=foreach)


def pcgrad_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow reference for :func:`pcgrad_direction`."""
    g_main, g_aux = flat64(main_grads), flat64(aux_grads)
    if float(g_main @ g_aux) >= 0:
        d = g_main + lam * g_aux
    else:
        d = project_out64(g_main, g_aux) + lam * project_out64(g_aux, g_main)
    return unflat(d, main_grads)
