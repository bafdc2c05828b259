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

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import TensorList


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


def cosine_gating_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float, weighted: bool = True
) -> list[Tensor]:
    """Slow float64 reference: the formula of method.md section 6 on one flat vector."""
    g_m, g_a = flat64(main_grads), flat64(aux_grads)
    den = math.sqrt(float(g_m @ g_m)) * math.sqrt(float(g_a @ g_a))
    cos = float(g_m @ g_a) / den if den > 0.0 else 0.0
    w = max(0.0, cos) if weighted else float(cos > 0.0)
    return unflat(g_m + lam * w * g_a, main_grads)


__all__ = ["cosine", "cosine_gating_coefficients", "cosine_gating_direction_reference"]
