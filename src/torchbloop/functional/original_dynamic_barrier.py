r"""The original Dynamic Barrier (Gong, Liu and Liu, 2021, "Automatic and Harmless Regularization
with Constrained and Lexicographic Optimization: A Dynamic Barrier Approach").

method.md section 6: minimise the aux loss while the main loss keeps decreasing at a rate set by
a barrier. With :math:`L_m` the main loss value and :math:`L_{low}` a lower bound of it,

.. math::
    \phi = \min\left(\alpha (L_m - L_{low}),\ \beta \|g_m\|^2\right), \qquad
    d = g_a + \max\left(0, \frac{\phi - \langle g_a, g_m\rangle}{\|g_m\|^2}\right) g_m

so that :math:`\langle d, g_m\rangle = \max(\langle g_a, g_m\rangle, \phi) \ge \phi`: the main
loss decreases at least at rate :math:`\phi` to first order. Unlike the lam-variant the Bloop
paper runs (:class:`torchbloop.DynamicBarrier`), the direction is the aux gradient plus as much
of the main gradient as the barrier needs. The Bloop paper's Section 4 writes this barrier with
:math:`\|g_{aux}\|^2` where :math:`\|g_{main}\|^2` is meant; this is the corrected form. When
:math:`\|g_m\| = 0` the main term is dropped (no epsilon).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import TensorList


def original_dynamic_barrier_coefficients(
    mm: Tensor,
    am: Tensor,
    main_loss: Tensor | float,
    *,
    alpha: float | Tensor = 1.0,
    beta: float | Tensor = 1.0,
    lower_bound: float | Tensor = 0.0,
) -> tuple[Tensor, Tensor]:
    r"""The barrier's ``(c_m, c_a)`` with ``d = c_m g_m + c_a g_a``, from Gram entries.

    Args:
        mm: ``||g_m||^2``. am: ``<g_a, g_m>``.
        main_loss: :math:`L_m`, the main loss value of the step (a 0-dim tensor on the device:
            no host synchronisation).
        alpha: :math:`\alpha > 0`. beta: :math:`\beta > 0`. lower_bound: :math:`L_{low}`.

    Example:
        >>> import torch
        >>> t = torch.tensor
        >>> original_dynamic_barrier_coefficients(t(2.0), t(-1.0), t(0.5), alpha=1.0, beta=1.0)
        (tensor(0.7500), tensor(1.))
    """
    phi = torch.minimum(
        alpha * (torch.as_tensor(main_loss).detach().to(mm) - lower_bound), beta * mm
    )
    valid = torch.isfinite(mm) & (mm > 0)
    safe = torch.where(valid, mm, torch.ones_like(mm))
    c_m = torch.where(valid, torch.clamp((phi - am) / safe, min=0.0), torch.zeros_like(mm))
    return c_m, torch.ones_like(c_m)


def original_dynamic_barrier_direction_reference(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    main_loss: float,
    alpha: float = 1.0,
    beta: float = 1.0,
    lower_bound: float = 0.0,
) -> list[Tensor]:
    """Slow float64 reference: the formula of method.md section 6 on one flat vector."""
    g_m, g_a = flat64(main_grads), flat64(aux_grads)
    mm, am = float(g_m @ g_m), float(g_a @ g_m)
    d = g_a.clone()
    if mm > 0.0:
        phi = min(alpha * (main_loss - lower_bound), beta * mm)
        d = d + max(0.0, (phi - am) / mm) * g_m
    return unflat(d, main_grads)


__all__ = [
    "original_dynamic_barrier_coefficients",
    "original_dynamic_barrier_direction_reference",
]
