"""A-GEM with the main loss protected, as a surgeon."""

from __future__ import annotations

from typing import ClassVar

from ..functional import Formula
from ..functional.agem import AGEMFormula
from ._base import Surgeon


class AGEM(Surgeon):
    r"""A-GEM (Chaudhry et al., ICLR 2019) in priority form: the aux gradient loses only the
    component that would slow the main loss down.

    .. math:: d = g_m + \lambda \left(g_a - \frac{\min(0, \langle g_a, g_m\rangle)}{\|g_m\|^2}
              g_m\right)

    :math:`g_m`, :math:`g_a`: the main and aux mini-batch gradients; :math:`\lambda` = ``lam``.
    Hence :math:`\langle d, g_m\rangle = \|g_m\|^2 + \lambda\max(0, \langle g_a, g_m\rangle)
    \ge \|g_m\|^2`: to first order the main loss never decreases more slowly than on its own.
    Without conflict (:math:`\langle g_a, g_m\rangle \ge 0`) it is Mixed. Stateless; inner
    products global over all parameters; :math:`\|g_m\| = 0` drops the projection (no epsilon).

    When to use: a cheap, stateless guard for the main loss, when the aux loss only sometimes
    conflicts with it. Like Dynamic Barrier and PCGrad it projects on the noisy batch gradient,
    so under heavy gradient noise it drifts toward Mixed (Bloop's EMA is the remedy).

    Differences from the Bloop paper's Table 1: none in the formula; A-GEM's episodic memory
    (the main task's reference gradient) is here the main loss's batch gradient, and the aux
    gradient is the one projected (main protected), as method.md section 6 fixes.

    Args:
        params: what a ``torch.optim`` optimizer takes.
        lam: :math:`\lambda \ge 0`, the weight of the aux gradient.
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses or gradients.
        process_group: ``"auto"``, ``None`` or a process group (see :class:`Surgeon`).

    Raises:
        ValueError: ``lam`` is negative or not finite, or several aux losses are given.

    Example:
        >>> import torch
        >>> from torchbloop.surgeons.agem import AGEM
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> AGEM([w], lam=1.0).backward(main=w[0] * 1.0, aux=w[1] - w[0])
        >>> w.grad  # g_a = (-1, 1) loses its component along -g_m
        tensor([1., 1.])
    """

    max_aux: ClassVar[int | None] = 1

    def _formula(self) -> Formula:
        return AGEMFormula()
