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

from collections.abc import Mapping

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import Reducer, TensorList
from .agem import _one_aux
from .contract import Coefficients, SurgeryStep


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


class OriginalDynamicBarrierFormula:
    """The original Dynamic Barrier as a :class:`~torchbloop.functional.contract.Formula` (K = 1).

    Hyperparameters: ``alpha``, ``beta``, ``lower_bound`` and ``main_loss`` (the main loss value
    of the step, a 0-dim tensor: the surgeon passes it with the others, no host sync). Info:
    ``"active"`` (bool: the barrier added some of ``g_m``) and ``"phi"``.

    Example:
        >>> import torch
        >>> from torchbloop.functional import SurgeryStep
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]]
        >>> hyper = {"alpha": 1.0, "beta": 1.0, "lower_bound": 0.0, "main_loss": torch.tensor(0.5)}
        >>> SurgeryStep(OriginalDynamicBarrierFormula(), g, [], hyper=hyper).apply().direction
        [tensor([0.5000, 1.0000])]
    """

    name = "original_dynamic_barrier"

    def num_state(self, k: int) -> int:
        _one_aux(self.name, k)
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(0, 0), (0, 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        _one_aux(self.name, k)
        if "main_loss" not in hyper:
            raise ValueError(f"{self.name} needs the main loss value: hyper['main_loss']")

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        mm, am = gram[:, 0, 0], gram[:, 0, 1]
        alpha, beta = hyper["alpha"].reshape(-1), hyper["beta"].reshape(-1)
        low, loss = hyper["lower_bound"].reshape(-1), hyper["main_loss"].reshape(-1)
        c_m, c_a = original_dynamic_barrier_coefficients(
            mm, am, loss, alpha=alpha, beta=beta, lower_bound=low
        )
        phi = torch.minimum(alpha * (loss - low), beta * mm)
        return Coefficients(
            torch.stack([c_m, c_a], dim=1),
            gram.new_zeros((gram.shape[0], 0, 2)),
            {"active": c_m > 0, "phi": phi},
        )


def original_dynamic_barrier_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    main_loss: Tensor | float,
    alpha: float = 1.0,
    beta: float = 1.0,
    lower_bound: float = 0.0,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> list[Tensor]:
    """The original Dynamic Barrier's direction through the surgery contract.

    Args:
        main_grads: ``g_m``. aux_grads: ``g_a``.
        main_loss: :math:`L_m` of the step (a 0-dim tensor on the device avoids a host sync).
        alpha, beta, lower_bound: :math:`\\alpha`, :math:`\\beta`, :math:`L_{low}`.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> g_m, g_a = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
        >>> original_dynamic_barrier_direction(g_m, g_a, main_loss=torch.tensor(0.5))
        [tensor([0.5000, 1.0000])]
    """
    loss = main_loss.detach() if isinstance(main_loss, Tensor) else torch.tensor(float(main_loss))
    step = SurgeryStep(
        OriginalDynamicBarrierFormula(),
        [main_grads, aux_grads],
        [],
        hyper={"alpha": alpha, "beta": beta, "lower_bound": lower_bound, "main_loss": loss},
        out=out,
        foreach=foreach,
        reduce=reduce,
    )
    return step.apply().direction


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
    "OriginalDynamicBarrierFormula",
    "original_dynamic_barrier_coefficients",
    "original_dynamic_barrier_direction",
    "original_dynamic_barrier_direction_reference",
]
