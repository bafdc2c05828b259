"""PCGrad for two objectives, lam-weighted as the paper runs it (Yu et al., 2020).

If ``<g_main, g_aux> >= 0``: ``d = g_main + lam * g_aux``; otherwise each gradient is projected
orthogonally to the other: ``d = pi(g_main; g_aux) + lam * pi(g_aux; g_main)``. Defined for one
auxiliary loss (K = 1); more raise a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from .._validation import check_lam
from ._reference import flat64, project_out64, unflat
from ._types import Reducer, TensorList
from .contract import Coefficients, stateless_direction
from .projection import projection_coefficient


def _one_level(name: str, k: int) -> None:
    if k != 1:
        raise ValueError(
            f"Invalid number of auxiliary losses for {name}: {k}; it is defined for one "
            "(use Bloop or Mixed for several)"
        )


class PCGradFormula:
    r"""PCGrad as a :class:`~torchbloop.functional.contract.Formula` (K = 1, hyperparameter ``lam``).

    ``d = A g_main + B g_aux`` with ``A = 1 - lam s_m`` and ``B = lam - s_a``, where on conflict
    (:math:`\langle g_m, g_a\rangle < 0`) ``s_m = <g_m, g_a> / ||g_m||^2`` and
    ``s_a = <g_m, g_a> / ||g_a||^2`` (both 0 otherwise): no host synchronisation.
    """

    name = "pcgrad"

    def num_state(self, k: int) -> int:
        _one_level(self.name, k)
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(0, 1), (0, 0), (1, 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        _one_level(self.name, k)
        lam = hyper.get("lam")
        if not isinstance(lam, Tensor):
            check_lam(lam)

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        lam = hyper["lam"].reshape(-1)
        dot, mm, aa = gram[:, 0, 1], gram[:, 0, 0], gram[:, 1, 1]
        conflict = dot < 0
        s_m, _ = projection_coefficient(dot, mm)
        s_a, _ = projection_coefficient(dot, aa)
        a = 1.0 - lam * s_m.where(conflict, 0.0)
        b = lam - s_a.where(conflict, 0.0)
        direction = a.new_zeros((gram.shape[0], 2))
        direction[:, 0], direction[:, 1] = a, b
        return Coefficients(direction, gram.new_zeros((gram.shape[0], 0, 2)), {})


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

    Args:
        main_grads: ``g_main``. aux_grads: ``g_aux``. lam: ``lam >= 0``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> pcgrad_direction([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], lam=1.0)
        [tensor([0.5000, 1.5000])]
    """
    return stateless_direction(
        PCGradFormula(),
        [main_grads, aux_grads],
        hyper={"lam": lam},
        out=out,
        foreach=foreach,
        reduce=reduce,
    )


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


__all__ = ["PCGradFormula", "pcgrad_direction", "pcgrad_direction_reference"]
