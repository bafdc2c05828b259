r"""A-GEM with the main loss protected (Chaudhry et al., ICLR 2019; method.md section 6).

.. math:: d = g_m + \lambda \left(g_a - \frac{\min(0, \langle g_a, g_m\rangle)}{\|g_m\|^2}\, g_m\right)

The aux gradient keeps whatever helps or does not touch the main loss; only its component that
would increase the main loss (to first order) is removed. Hence
:math:`\langle d, g_m\rangle = \|g_m\|^2 + \lambda \max(0, \langle g_a, g_m\rangle) \ge \|g_m\|^2`:
the main loss never decreases more slowly than under its own gradient. Without conflict it is Mixed.
When :math:`\|g_m\| = 0` the projection term is dropped (no epsilon).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import TensorList
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


__all__ = ["agem_coefficients", "agem_direction_reference"]
