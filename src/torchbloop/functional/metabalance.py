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
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ._types import TensorList

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
    "MetaBalanceCoefficients",
    "metabalance_coefficients",
    "metabalance_direction_reference",
]
