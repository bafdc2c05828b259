r"""MetaBalance: the aux gradient's magnitude adapted to the main one's (He et al., WWW 2022).

"MetaBalance: Improving Multi-Task Recommendations via Adapting Gradient Magnitudes of Auxiliary
Tasks". method.md section 6: per tensor :math:`t` (the paper's per-layer balancing), moving
averages of the two gradient norms (state, from 0), then

.. math::
    m_{k,t} \leftarrow \beta\, m_{k,t} + (1-\beta)\, \|g_{k,t}\| \quad (k \in \{m, a\}), \qquad
    d_t = g_{m,t} + \left(r \frac{m_{m,t}}{m_{a,t}} + (1 - r)\right) g_{a,t}

so the aux term's norm is :math:`r\,(m_m/m_a)\|g_a\| + (1-r)\|g_a\|`: with steady norms it is
:math:`r \|g_m\| + (1-r)\|g_a\|`, the relax factor :math:`r` moving it from the aux gradient's
own magnitude (``r = 0``, Mixed with weight 1) to the main gradient's (``r = 1``). The averages
are updated before they are used. Where :math:`m_{a,t} = 0` (the aux gradient of that tensor has
been zero so far) the ratio term is dropped. No epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ._types import Reducer, TensorList
from .agem import _one_aux
from .contract import Coefficients, SurgeryStep

DEFAULT_R = 0.7
"""The relax factor the MetaBalance paper recommends."""
DEFAULT_BETA = 0.9
"""The moving-average weight of the old norm (the paper's default)."""


class MetaBalanceCoefficients(NamedTuple):
    """The result of :func:`metabalance_coefficients` (one entry per block)."""

    c_main: Tensor
    """Coefficient of ``g_m`` (1)."""
    c_aux: Tensor
    """Coefficient of ``g_a``: ``r * m_main / m_aux + (1 - r)``."""
    norm_main: Tensor
    """The new moving average of ``||g_m||``."""
    norm_aux: Tensor
    """The new moving average of ``||g_a||``."""


def metabalance_coefficients(
    mm: Tensor,
    aa: Tensor,
    norm_main: Tensor,
    norm_aux: Tensor,
    *,
    r: float | Tensor = DEFAULT_R,
    beta: float | Tensor = DEFAULT_BETA,
) -> MetaBalanceCoefficients:
    r"""MetaBalance's coefficients and new norm averages, per block, from Gram entries.

    Args:
        mm: ``||g_m||^2`` per block. aa: ``||g_a||^2`` per block.
        norm_main: :math:`m_m` before this step. norm_aux: :math:`m_a` before this step.
        r: the relax factor :math:`r \in [0, 1]`. beta: :math:`\beta \in [0, 1)`.

    Example:
        >>> import torch
        >>> t = torch.tensor
        >>> c = metabalance_coefficients(t([4.0]), t([1.0]), t([0.0]), t([0.0]), r=0.5, beta=0.5)
        >>> c.c_aux, c.norm_main, c.norm_aux
        (tensor([1.5000]), tensor([1.]), tensor([0.5000]))
    """
    new_main = beta * norm_main + (1.0 - beta) * torch.sqrt(mm)
    new_aux = beta * norm_aux + (1.0 - beta) * torch.sqrt(aa)
    valid = torch.isfinite(new_aux) & (new_aux > 0)
    safe = torch.where(valid, new_aux, torch.ones_like(new_aux))
    ratio = torch.where(valid, new_main / safe, torch.zeros_like(new_main))
    c_aux = r * ratio + (1.0 - r)
    return MetaBalanceCoefficients(torch.ones_like(c_aux), c_aux, new_main, new_aux)


NORM_KEYS = ("norm_main", "norm_aux")
"""The hyperparameters that carry the norm averages into the formula (one per block), and the
info entries that carry the new ones out."""


class MetaBalanceFormula:
    """MetaBalance as a :class:`~torchbloop.functional.contract.Formula` (K = 1).

    Meant for per-tensor blocks (``gram_blocks="tensor"`` with ``coef_blocks`` one id per
    tensor, as :func:`metabalance_direction` does). Hyperparameters: ``r``, ``beta`` and the
    averages :data:`NORM_KEYS` before the step (one per block). The averages are scalar state:
    they enter as hyperparameters and the new values leave in ``info`` under the same keys, for
    the caller to keep.

    Example:
        >>> import torch
        >>> from torchbloop.functional import SurgeryStep
        >>> g = [[torch.tensor([3.0, 4.0])], [torch.tensor([1.0, 0.0])]]
        >>> hyper = {"r": 1.0, "beta": 0.9, "norm_main": [0.0], "norm_aux": [0.0]}
        >>> SurgeryStep(MetaBalanceFormula(), g, [], hyper=hyper, gram_blocks="tensor",
        ...             coef_blocks=[0]).apply().direction  # aux rescaled to ||g_m|| = 5
        [tensor([8., 4.])]
    """

    name = "metabalance"

    def num_state(self, k: int) -> int:
        _one_aux(self.name, k)
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(0, 0), (1, 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        _one_aux(self.name, k)
        missing = [key for key in NORM_KEYS if key not in hyper]
        if missing:
            raise ValueError(f"metabalance needs its norm averages: hyper{missing}")

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        c = metabalance_coefficients(
            gram[:, 0, 0],
            gram[:, 1, 1],
            hyper[NORM_KEYS[0]].reshape(-1),
            hyper[NORM_KEYS[1]].reshape(-1),
            r=hyper["r"].reshape(-1),
            beta=hyper["beta"].reshape(-1),
        )
        return Coefficients(
            torch.stack([c.c_main, c.c_aux], dim=1),
            gram.new_zeros((gram.shape[0], 0, 2)),
            {NORM_KEYS[0]: c.norm_main, NORM_KEYS[1]: c.norm_aux, "c_aux": c.c_aux},
        )


class MetaBalanceDirection(NamedTuple):
    """The result of :func:`metabalance_direction`."""

    direction: list[Tensor]
    """``g_m + (r m_m / m_a + 1 - r) g_a`` tensor by tensor."""
    norm_main: Tensor
    """The new averages of ``||g_m||``, one per tensor (float64)."""
    norm_aux: Tensor
    """The new averages of ``||g_a||``, one per tensor (float64)."""


def metabalance_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    norm_main: Tensor,
    norm_aux: Tensor,
    r: float = DEFAULT_R,
    beta: float = DEFAULT_BETA,
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> MetaBalanceDirection:
    """One MetaBalance step through the surgery contract (per-tensor inner products); the
    caller keeps the returned averages.

    Args:
        main_grads: ``g_m``. aux_grads: ``g_a``.
        norm_main: :math:`m_m` per tensor before the step (``[n_tensors]``; zeros at first).
        norm_aux: :math:`m_a` per tensor before the step.
        r: the relax factor in ``[0, 1]``. beta: the old average's weight in ``[0, 1)``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> z = torch.zeros(1)
        >>> metabalance_direction([torch.tensor([3.0, 4.0])], [torch.tensor([1.0, 0.0])],
        ...                       norm_main=z, norm_aux=z, r=1.0).direction
        [tensor([8., 4.])]
    """
    n = len(main_grads)
    step = SurgeryStep(
        MetaBalanceFormula(),
        [main_grads, aux_grads],
        [],
        hyper={"r": r, "beta": beta, NORM_KEYS[0]: norm_main, NORM_KEYS[1]: norm_aux},
        out=out,
        gram_blocks="tensor",
        coef_blocks=list(range(n)),
        foreach=foreach,
        reduce=reduce,
    )
    result = step.apply()
    return MetaBalanceDirection(
        result.direction, result.info[NORM_KEYS[0]], result.info[NORM_KEYS[1]]
    )


def metabalance_direction_reference(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    norms: Sequence[tuple[float, float]],
    r: float = DEFAULT_R,
    beta: float = DEFAULT_BETA,
) -> tuple[list[Tensor], list[tuple[float, float]]]:
    """Slow float64 reference of one step, tensor by tensor.

    Args:
        norms: ``(m_main, m_aux)`` per tensor before this step.

    Returns:
        ``(direction, new norms)``.
    """
    out: list[Tensor] = []
    new_norms: list[tuple[float, float]] = []
    for g_m, g_a, (m_m, m_a) in zip(main_grads, aux_grads, norms):
        gm, ga = g_m.detach().to("cpu", torch.float64), g_a.detach().to("cpu", torch.float64)
        m_m = beta * m_m + (1.0 - beta) * math.sqrt(float((gm * gm).sum()))
        m_a = beta * m_a + (1.0 - beta) * math.sqrt(float((ga * ga).sum()))
        coef = (r * m_m / m_a if m_a > 0.0 else 0.0) + (1.0 - r)
        out.append((gm + coef * ga).to(g_m.device, g_m.dtype))
        new_norms.append((m_m, m_a))
    return out, new_norms


__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_R",
    "NORM_KEYS",
    "MetaBalanceCoefficients",
    "MetaBalanceDirection",
    "MetaBalanceFormula",
    "metabalance_coefficients",
    "metabalance_direction",
    "metabalance_direction_reference",
]
