"""PCGrad for two objectives (lam-weighted, symmetric on conflict), as a surgeon."""

from __future__ import annotations

from typing import ClassVar

from ..functional import Formula, PCGradFormula
from ._base import Surgeon


class PCGrad(Surgeon):
    r"""PCGrad (Yu et al., NeurIPS 2020) for a main and an auxiliary loss, as the Bloop paper runs it.

    .. math:: d = \begin{cases} g_m + \lambda g_a & \langle g_m, g_a\rangle \ge 0 \\
              \pi(g_m; g_a) + \lambda\, \pi(g_a; g_m) & \text{otherwise} \end{cases}

    with :math:`\pi(a; b) = a - \frac{\langle a, b\rangle}{\|b\|^2} b`, on the current mini-batch
    gradients (no EMA). Stateless.

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
        >>> from torchbloop import PCGrad
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> PCGrad([w], lam=1.0).backward(main=w[0] - w[1], aux=w[1] - w[0] + w.sum() * 0)
        >>> w.grad
        tensor([0., 0.])
    """

    max_aux: ClassVar[int | None] = 1

    def _formula(self) -> Formula:
        return PCGradFormula()
