r"""A-GEM with the main loss protected (Chaudhry et al., ICLR 2019; method.md section 6).

.. math:: d = g_m + \lambda \left(g_a - \frac{\min(0, \langle g_a, g_m\rangle)}{\|g_m\|^2}\, g_m\right)

The aux gradient keeps whatever helps or does not touch the main loss; only its component that
would increase the main loss (to first order) is removed. Hence
:math:`\langle d, g_m\rangle = \|g_m\|^2 + \lambda \max(0, \langle g_a, g_m\rangle) \ge \|g_m\|^2`:
the main loss never decreases more slowly than under its own gradient. Without conflict it is Mixed.
When :math:`\|g_m\| = 0` the projection term is dropped (no epsilon).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import Reducer, TensorList
from .contract import Coefficients, stateless_direction
from .projection import projection_coefficient


def agem_coefficients(mm: Tensor, am: Tensor, *, lam: float | Tensor) -> tuple[Tensor, Tensor]:
    r"""A-GEM's coefficients ``(c_m, c_a)`` with ``d = c_m g_m + c_a g_a``, from Gram entries.

    ``c_m = 1 - lam * min(0, <g_a, g_m>) / ||g_m||^2`` (the ratio taken as 0 when ``||g_m||^2``
    is zero or not finite) and ``c_a = lam``. Elementwise on tensors of any shape (one entry
    per block); no host synchronisation.

    Args:
        mm: ``||g_m||^2``. am: ``<g_a, g_m>``. lam: :math:`\lambda \ge 0`.

    Example:
        >>> import torch
        >>> agem_coefficients(torch.tensor(4.0), torch.tensor(-2.0), lam=1.0)
        (tensor(1.5000), tensor(1.))
    """
    ratio, _ = projection_coefficient(torch.clamp(am, max=0.0), mm)
    c_m = 1.0 - lam * ratio
    return c_m, torch.full_like(c_m, 1.0) * lam


def _one_aux(name: str, k: int) -> None:
    if k != 1:
        raise ValueError(
            f"Invalid number of auxiliary losses for {name}: {k}; it is defined for one "
            "(use Bloop, Mixed or MGDA for several)"
        )


class AGEMFormula:
    """A-GEM as a :class:`~torchbloop.functional.contract.Formula` (K = 1; ``lam``).

    Vectors ``g_0 = g_m``, ``g_1 = g_a``; no state. Info: ``"conflict"`` (bool,
    ``<g_a, g_m> < 0``: the projection was applied).

    Example:
        >>> import torch
        >>> from torchbloop.functional import SurgeryStep
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]]
        >>> SurgeryStep(AGEMFormula(), g, [], hyper={"lam": 1.0}).apply().direction
        [tensor([1., 1.])]
    """

    name = "agem"

    def num_state(self, k: int) -> int:
        _one_aux(self.name, k)
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(0, 0), (0, 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        _one_aux(self.name, k)

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        lam = hyper["lam"].reshape(-1)
        c_m, c_a = agem_coefficients(gram[:, 0, 0], gram[:, 0, 1], lam=lam)
        direction = torch.stack([c_m, c_a], dim=1)
        return Coefficients(
            direction, gram.new_zeros((gram.shape[0], 0, 2)), {"conflict": gram[:, 0, 1] < 0}
        )


def agem_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    lam: float,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> list[Tensor]:
    """A-GEM's direction through the surgery contract (one Gram pass, one combination pass).

    Args:
        main_grads: ``g_m``. aux_grads: ``g_a``. lam: ``lam >= 0``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> agem_direction([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], lam=1.0)
        [tensor([1., 1.])]
    """
    return stateless_direction(
        AGEMFormula(),
        [main_grads, aux_grads],
        hyper={"lam": lam},
        out=out,
        foreach=foreach,
        reduce=reduce,
    )


def agem_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow float64 reference: the formula of method.md section 6 on one flat vector."""
    g_m, g_a = flat64(main_grads), flat64(aux_grads)
    mm, am = float(g_m @ g_m), float(g_a @ g_m)
    d = g_m + lam * g_a
    if mm > 0.0 and am < 0.0:
        d = d - lam * (am / mm) * g_m
    return unflat(d, main_grads)


__all__ = ["AGEMFormula", "agem_coefficients", "agem_direction", "agem_direction_reference"]
