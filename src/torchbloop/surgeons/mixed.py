"""Mixed: the usual regulariser, as a surgeon."""

from __future__ import annotations

from ..functional import Formula, MixedFormula
from ._base import Surgeon


class Mixed(Surgeon):
    r"""The gradient of ``L_main + lam * L_aux``: :math:`d = g_{main} + \lambda g_{aux}`.

    The baseline every gradient-surgery method is compared with. Stateless. With K auxiliary
    losses (``lam`` a list): :math:`d = g_0 + \sum_k \lambda_k g_k`.

    Args:
        params: what a ``torch.optim`` optimizer takes.
        lam: :math:`\lambda \ge 0`, or a list of K weights for K auxiliary losses.
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses, gradients or directions.
        process_group: as for :class:`~torchbloop.Bloop` (DDP averaging).
        granularity: accepted for uniformity (Mixed takes no inner products); parameter groups
            may carry their own ``lam``.

    Example:
        >>> import torch
        >>> from torchbloop import Mixed
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> Mixed([w], lam=0.5).backward(main=w.sum(), aux=w.pow(2).sum() / 2)
        >>> w.grad
        tensor([1.5000, 2.0000])
    """

    def _formula(self) -> Formula:
        return MixedFormula()
