"""Dynamic Barrier (the lam-variant), as a surgeon."""

from __future__ import annotations

from typing import ClassVar

from ..functional import DynamicBarrierFormula, Formula
from ._base import Surgeon


class DynamicBarrier(Surgeon):
    r"""Dynamic Barrier gradient descent (Gong and Liu, 2021), the lam-variant of the Bloop paper.

    .. math:: d = \mu\, g_m + \lambda g_a, \qquad
              \mu = \max\left(1 - \lambda \frac{\langle g_m, g_a\rangle}{\|g_m\|^2}, 0\right)

    i.e. Bloop without EMA whose projection coefficient is clipped at :math:`1/\lambda`; on the
    current mini-batch gradients. Stateless.

    Args:
        params: what a ``torch.optim`` optimizer takes.
        lam: :math:`\lambda \ge 0` (one auxiliary loss; a list of several is refused).
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses, gradients or directions.
        process_group: as for :class:`~torchbloop.Bloop` (DDP averaging).
        granularity: ``"global"`` (default), ``"group"`` or ``"tensor"``: the blocks over which
            the inner products are taken (parameter groups may carry their own ``lam``).

    Example:
        >>> import torch
        >>> from torchbloop import DynamicBarrier
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> DynamicBarrier([w], lam=1.0).backward(main=w[0] * 1.0, aux=w[1] - w[0])
        >>> w.grad
        tensor([1., 1.])
    """

    max_aux: ClassVar[int | None] = 1

    def _formula(self) -> Formula:
        return DynamicBarrierFormula()
