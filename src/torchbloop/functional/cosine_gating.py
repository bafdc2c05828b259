r"""Cosine gating (Du et al., 2018, "Adapting Auxiliary Losses Using Gradient Similarity").

method.md section 6, in priority form:

.. math:: d = g_m + \lambda\, w\, g_a, \qquad
          w = \max(0, \cos(g_m, g_a)) \ \text{(weighted)} \quad\text{or}\quad
          w = [\cos(g_m, g_a) > 0] \ \text{(unweighted)}

The aux gradient is used only on steps where it agrees with the main gradient (positive cosine),
scaled by the cosine in the weighted form. With a positive cosine the unweighted form is Mixed;
otherwise both give :math:`g_m`. The cosine of a zero vector is taken as 0 (the gate closes):
no epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import Reducer, TensorList
from .agem import _one_aux
from .contract import Coefficients, stateless_direction


def cosine(ab: Tensor, aa: Tensor, bb: Tensor) -> Tensor:
    """``<a, b> / (||a|| ||b||)`` from Gram entries; 0 where a norm is zero or not finite.

    The norms are taken separately (``sqrt(aa) * sqrt(bb)``), so the product does not overflow
    where ``aa * bb`` would. The result is clamped to ``[-1, 1]`` (rounding can leave it just
    outside). Elementwise; no host synchronisation.

    Example:
        >>> import torch
        >>> cosine(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(4.0))
        tensor(0.5000)
        >>> cosine(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(4.0))
        tensor(0.)
    """
    den = torch.sqrt(aa) * torch.sqrt(bb)
    valid = torch.isfinite(den) & (den > 0)
    safe = torch.where(valid, den, torch.ones_like(den))
    return torch.where(valid, ab / safe, torch.zeros_like(ab)).clamp(-1.0, 1.0)


def cosine_gating_coefficients(
    mm: Tensor, am: Tensor, aa: Tensor, *, lam: float | Tensor, weighted: bool = True
) -> tuple[Tensor, Tensor]:
    r"""Cosine gating's ``(c_m, c_a)`` with ``d = c_m g_m + c_a g_a``, from Gram entries.

    ``c_m = 1``; ``c_a = lam * max(0, cos)`` (weighted) or ``lam * [cos > 0]`` (unweighted).

    Args:
        mm: ``||g_m||^2``. am: ``<g_a, g_m>``. aa: ``||g_a||^2``. lam: :math:`\lambda \ge 0`.
        weighted: scale the aux gradient by the cosine (True) or only gate it (False).

    Example:
        >>> import torch
        >>> one = torch.tensor(1.0)
        >>> cosine_gating_coefficients(one, torch.tensor(0.5), one, lam=2.0)
        (tensor(1.), tensor(1.))
    """
    cos = cosine(am, mm, aa)
    gate = torch.clamp(cos, min=0.0) if weighted else (cos > 0).to(cos.dtype)
    return torch.ones_like(cos), gate * lam


class CosineGatingFormula:
    """Cosine gating as a :class:`~torchbloop.functional.contract.Formula` (K = 1; ``lam``).

    Args:
        weighted: scale the aux gradient by the cosine (True) or only gate it (False).

    Info: ``"cos"``, the cosine of the two gradients (0 where one is zero).

    Example:
        >>> import torch
        >>> from torchbloop.functional import SurgeryStep
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]]
        >>> SurgeryStep(CosineGatingFormula(weighted=False), g, [], hyper={"lam": 2.0}).apply().direction
        [tensor([3., 2.])]
    """

    def __init__(self, *, weighted: bool = True) -> None:
        self.weighted = bool(weighted)
        self.name = "cosine_gating" if self.weighted else "cosine_gating_unweighted"

    def num_state(self, k: int) -> int:
        _one_aux(self.name, k)
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(0, 0), (0, 1), (1, 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        _one_aux(self.name, k)

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        lam = hyper["lam"].reshape(-1)
        mm, am, aa = gram[:, 0, 0], gram[:, 0, 1], gram[:, 1, 1]
        c_m, c_a = cosine_gating_coefficients(mm, am, aa, lam=lam, weighted=self.weighted)
        return Coefficients(
            torch.stack([c_m, c_a], dim=1),
            gram.new_zeros((gram.shape[0], 0, 2)),
            {"cos": cosine(am, mm, aa)},
        )


def cosine_gating_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    lam: float,
    weighted: bool = True,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> list[Tensor]:
    """Cosine gating's direction through the surgery contract.

    Args:
        main_grads: ``g_m``. aux_grads: ``g_a``. lam: ``lam >= 0``.
        weighted: scale by the cosine (True) or only gate (False).
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> cosine_gating_direction([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], lam=1.0)
        [tensor([1., 0.])]
    """
    return stateless_direction(
        CosineGatingFormula(weighted=weighted),
        [main_grads, aux_grads],
        hyper={"lam": lam},
        out=out,
        foreach=foreach,
        reduce=reduce,
    )


def cosine_gating_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float, weighted: bool = True
) -> list[Tensor]:
    """Slow float64 reference: the formula of method.md section 6 on one flat vector."""
    g_m, g_a = flat64(main_grads), flat64(aux_grads)
    den = math.sqrt(float(g_m @ g_m)) * math.sqrt(float(g_a @ g_a))
    cos = float(g_m @ g_a) / den if den > 0.0 else 0.0
    w = max(0.0, cos) if weighted else float(cos > 0.0)
    return unflat(g_m + lam * w * g_a, main_grads)


__all__ = [
    "CosineGatingFormula",
    "cosine",
    "cosine_gating_coefficients",
    "cosine_gating_direction",
    "cosine_gating_direction_reference",
]
