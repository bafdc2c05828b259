"""Dynamic Barrier, the lam-variant the paper runs (Gong and Liu, 2021; method.md section 2).

``d = mu * g_main + lam * g_aux`` with ``mu = max(1 - lam <g_main, g_aux> / ||g_main||^2, 0)``:
Bloop without EMA whose coefficient ``r = <g_aux, g_main> / ||g_main||^2`` is clipped at
``1 / lam``. Defined for one auxiliary loss (K = 1); more raise a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .._validation import check_lam
from ._reference import flat64, unflat
from ._types import Reducer, TensorList
from .contract import Coefficients, stateless_direction
from .pcgrad import _one_level
from .projection import projection_coefficient


class DynamicBarrierFormula:
    """Dynamic Barrier as a :class:`~torchbloop.functional.contract.Formula` (K = 1, ``lam``).

    When ``g_main`` is zero its coefficient is irrelevant and taken as 1 (no 0/0).
    """

    name = "dynamic_barrier"

    def num_state(self, k: int) -> int:
        _one_level(self.name, k)
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(0, 1), (0, 0)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        _one_level(self.name, k)
        lam = hyper.get("lam")
        if not isinstance(lam, Tensor):
            check_lam(lam)

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        lam = hyper["lam"].reshape(-1)
        ratio, _ = projection_coefficient(gram[:, 0, 1], gram[:, 0, 0])
        mu = torch.clamp(1.0 - lam * ratio, min=0.0)
        direction = torch.stack([mu, lam.expand_as(mu)], dim=1)
        return Coefficients(direction, gram.new_zeros((gram.shape[0], 0, 2)), {})


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

    Args:
        main_grads: ``g_main``. aux_grads: ``g_aux``. lam: ``lam >= 0``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> dynamic_barrier_direction([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], lam=1.0)
        [tensor([1., 1.])]
    """
    return stateless_direction(
        DynamicBarrierFormula(),
        [main_grads, aux_grads],
        hyper={"lam": lam},
        out=out,
        foreach=foreach,
        reduce=reduce,
    )


def dynamic_barrier_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow reference for :func:`dynamic_barrier_direction`."""
    g_main, g_aux = flat64(main_grads), flat64(aux_grads)
    norm2 = float(g_main @ g_main)
    mu = 1.0 if norm2 == 0.0 else max(1.0 - lam * float(g_main @ g_aux) / norm2, 0.0)
    return unflat(mu * g_main + lam * g_aux, main_grads)


__all__ = [
    "DynamicBarrierFormula",
    "dynamic_barrier_direction",
    "dynamic_barrier_direction_reference",
]
