r"""GradVac, the aux gradient adjusted toward the main one (Wang et al., ICLR 2021).

"Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively Multilingual
Models". method.md section 6, in priority form: only the aux gradient moves, toward the main.
With :math:`\phi = \cos(g_a, g_m)` and the target cosine :math:`\hat\phi` (state, from 0):

.. math::
    g_a' = g_a + [\phi < \hat\phi]\;
           \frac{\|g_a\| \left(\hat\phi \sqrt{1-\phi^2} - \phi \sqrt{1-\hat\phi^2}\right)}
                {\|g_m\| \sqrt{1-\hat\phi^2}}\; g_m, \qquad
    d = g_m + \lambda g_a', \qquad
    \hat\phi \leftarrow (1-\beta)\hat\phi + \beta \phi

The adjustment is the smallest move along :math:`g_m` that lifts the cosine to exactly
:math:`\hat\phi`. Zero norms drop the adjustment, and the cosine of a zero vector is taken as 0
(so such a step pulls :math:`\hat\phi` toward 0). No epsilon.

``beta`` defaults to 0.01, the value the GradVac paper uses in its experiments (its EMA weight
``beta = 1e-2``); LibMTL's and TorchJD's default of 0.5 is theirs, not the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import Reducer, TensorList
from .agem import _one_aux
from .contract import Coefficients, SurgeryStep
from .cosine_gating import cosine

DEFAULT_BETA = 0.01
"""The GradVac paper's EMA weight of the new cosine (``beta = 1e-2``)."""


class GradVacCoefficients(NamedTuple):
    """The result of :func:`gradvac_coefficients`."""

    c_main: Tensor
    """Coefficient of ``g_m`` in ``d`` (``1 + lam * w``, ``w`` the adjustment)."""
    c_aux: Tensor
    """Coefficient of ``g_a`` in ``d`` (``lam``)."""
    phi: Tensor
    """``cos(g_a, g_m)`` of this step (0 where a norm is zero)."""
    phi_hat: Tensor
    """The new target cosine ``(1 - beta) phi_hat + beta phi``."""
    adjusted: Tensor
    """Bool: the aux gradient was moved toward the main one on this step."""


def gradvac_coefficients(
    mm: Tensor,
    am: Tensor,
    aa: Tensor,
    phi_hat: Tensor,
    *,
    lam: float | Tensor,
    beta: float | Tensor = DEFAULT_BETA,
) -> GradVacCoefficients:
    r"""GradVac's coefficients and new state from Gram entries and the target cosine.

    ``d = c_main g_m + c_aux g_a``. Elementwise on tensors of one shape (one entry per block);
    no host synchronisation.

    Args:
        mm: ``||g_m||^2``. am: ``<g_a, g_m>``. aa: ``||g_a||^2``.
        phi_hat: :math:`\hat\phi`, the target cosine before this step.
        lam: :math:`\lambda \ge 0`. beta: :math:`\beta \in (0, 1]`, the EMA weight of the new cosine.

    Example:
        >>> import torch
        >>> t = torch.tensor
        >>> c = gradvac_coefficients(t(1.0), t(0.0), t(1.0), t(0.5), lam=1.0, beta=0.5)
        >>> c.c_main, c.phi_hat  # orthogonal gradients, target 0.5: aux lifted to cos = 0.5
        (tensor(1.5774), tensor(0.2500))
    """
    phi = cosine(am, mm, aa)
    s_phi = torch.sqrt(torch.clamp(1.0 - phi * phi, min=0.0))
    s_hat = torch.sqrt(torch.clamp(1.0 - phi_hat * phi_hat, min=0.0))
    den = torch.sqrt(mm) * s_hat
    valid = (phi < phi_hat) & torch.isfinite(den) & (den > 0)
    safe = torch.where(valid, den, torch.ones_like(den))
    num = torch.sqrt(aa) * (phi_hat * s_phi - phi * s_hat)
    w = torch.where(valid, num / safe, torch.zeros_like(num))
    c_main = 1.0 + lam * w
    new_hat = (1.0 - beta) * phi_hat + beta * phi
    return GradVacCoefficients(c_main, torch.ones_like(c_main) * lam, phi, new_hat, valid)


TARGET_KEY = "phi_hat"
"""The hyperparameter that carries the target cosine into the formula, and the info entry that
carries the new one out."""


class GradVacFormula:
    """GradVac as a :class:`~torchbloop.functional.contract.Formula` (K = 1).

    Hyperparameters: ``lam``, ``beta`` and :data:`TARGET_KEY` (the target cosine before the
    step, one per block). The target is scalar state: it enters as a hyperparameter and the new
    value leaves in ``info[TARGET_KEY]``, for the caller to keep (the contract's vector state is
    for parameter-shaped buffers). Info also: ``"phi"`` (this step's cosine) and
    ``"adjusted"`` (bool).

    Example:
        >>> import torch
        >>> from torchbloop.functional import SurgeryStep
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]]
        >>> hyper = {"lam": 1.0, "beta": 0.5, "phi_hat": torch.tensor(0.5)}
        >>> result = SurgeryStep(GradVacFormula(), g, [], hyper=hyper).apply()
        >>> result.direction, result.info["phi_hat"]
        ([tensor([1.5774, 1.0000])], tensor([0.2500], dtype=torch.float64))
    """

    name = "gradvac"

    def num_state(self, k: int) -> int:
        _one_aux(self.name, k)
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(0, 0), (0, 1), (1, 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        _one_aux(self.name, k)
        if TARGET_KEY not in hyper:
            raise ValueError(f"gradvac needs its target cosine: hyper[{TARGET_KEY!r}]")

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        c = gradvac_coefficients(
            gram[:, 0, 0],
            gram[:, 0, 1],
            gram[:, 1, 1],
            hyper[TARGET_KEY].reshape(-1),
            lam=hyper["lam"].reshape(-1),
            beta=hyper["beta"].reshape(-1),
        )
        return Coefficients(
            torch.stack([c.c_main, c.c_aux], dim=1),
            gram.new_zeros((gram.shape[0], 0, 2)),
            {TARGET_KEY: c.phi_hat, "phi": c.phi, "adjusted": c.adjusted},
        )


class GradVacDirection(NamedTuple):
    """The result of :func:`gradvac_direction`."""

    direction: list[Tensor]
    """``g_m + lam * g_a'``, one tensor per parameter."""
    phi_hat: Tensor
    """The new target cosine (float64, shape ``[1]``)."""
    phi: Tensor
    """This step's ``cos(g_a, g_m)`` (shape ``[1]``)."""
    adjusted: Tensor
    """Bool: the aux gradient was moved toward the main one (shape ``[1]``)."""


def gradvac_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    lam: float,
    phi_hat: Tensor,
    beta: float = DEFAULT_BETA,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> GradVacDirection:
    """One GradVac step through the surgery contract; the caller keeps the returned target.

    Args:
        main_grads: ``g_m``. aux_grads: ``g_a``. lam: ``lam >= 0``.
        phi_hat: the target cosine before the step (0-dim).
        beta: the EMA weight of the new cosine, in ``(0, 1]``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> g_m, g_a = [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]
        >>> r = gradvac_direction(g_m, g_a, lam=1.0, phi_hat=torch.tensor(0.5), beta=0.5)
        >>> r.direction, r.phi_hat
        ([tensor([1.5774, 1.0000])], tensor([0.2500], dtype=torch.float64))
    """
    step = SurgeryStep(
        GradVacFormula(),
        [main_grads, aux_grads],
        [],
        hyper={"lam": lam, "beta": beta, TARGET_KEY: phi_hat},
        out=out,
        foreach=foreach,
        reduce=reduce,
    )
    result = step.apply()
    info = result.info
    return GradVacDirection(result.direction, info[TARGET_KEY], info["phi"], info["adjusted"])


def gradvac_direction_reference(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    lam: float,
    phi_hat: float,
    beta: float = DEFAULT_BETA,
) -> tuple[list[Tensor], float]:
    """Slow float64 reference of one step: ``(direction, new phi_hat)``."""
    g_m, g_a = flat64(main_grads), flat64(aux_grads)
    n_m, n_a = math.sqrt(float(g_m @ g_m)), math.sqrt(float(g_a @ g_a))
    phi = float(g_a @ g_m) / (n_m * n_a) if n_m * n_a > 0.0 else 0.0
    phi = min(1.0, max(-1.0, phi))
    s_hat = math.sqrt(max(0.0, 1.0 - phi_hat**2))
    if phi < phi_hat and n_m * s_hat > 0.0:
        w = n_a * (phi_hat * math.sqrt(max(0.0, 1.0 - phi**2)) - phi * s_hat) / (n_m * s_hat)
        g_a = g_a + w * g_m
    d = g_m + lam * g_a
    return unflat(d, main_grads), (1.0 - beta) * phi_hat + beta * phi


__all__ = [
    "DEFAULT_BETA",
    "TARGET_KEY",
    "GradVacCoefficients",
    "GradVacDirection",
    "GradVacFormula",
    "gradvac_coefficients",
    "gradvac_direction",
    "gradvac_direction_reference",
]
