"""MGDA, as a surgeon."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from .._validation import ParamsT
from ..distributed.data_parallel import ProcessGroupArg
from ..functional import Formula
from ..functional.mgda import MAX_OBJECTIVES, MGDAFormula
from ._base import NonFinite, Surgeon


class MGDA(Surgeon):
    r"""MGDA (Desideri, 2012; Sener and Koltun, 2018): the min-norm point of the objectives'
    gradients, a direction that decreases every objective.

    .. math:: \gamma = \operatorname{clip}\left(\frac{\langle b - a, b\rangle}{\|a - b\|^2},
              0, 1\right), \qquad d = \gamma a + (1 - \gamma) b, \qquad a = g_m,\ b = \lambda g_a

    :math:`\lambda` = ``lam`` scales the aux objective, so a sweep over ``lam`` traces a front.
    With K aux losses (``lam`` a list of K weights), :math:`d` is the min-norm point of the
    convex hull of :math:`g_m, \lambda_1 g_1, \dots, \lambda_K g_K`, solved exactly on their
    Gram matrix on the device (see :mod:`torchbloop.functional.mgda`; at most
    ``MAX_OBJECTIVES - 1`` aux losses). Always :math:`\langle d, v\rangle \ge \|d\|^2` for
    every objective's vector :math:`v`. Stateless; inner products global.

    When to use: when no loss should get worse (a common descent direction). MGDA has no
    priority: it treats the main loss as one objective among others, so the main loss is not
    protected beyond "it does not increase to first order", and the step shrinks toward 0
    near a Pareto-stationary point (with ``lam = 0`` the aux objective is the zero vector and
    :math:`d = 0`). The step length is the min-norm point's, often much shorter than
    :math:`g_m`: an adaptive optimizer (Adam) hides that, plain SGD does not.

    Differences from the Bloop paper's Table 1: the paper's MGDA coefficient has the wrong sign
    and no clip to :math:`[0, 1]`; this is the correct min-norm form.

    Args:
        params: what a ``torch.optim`` optimizer takes.
        lam: :math:`\lambda \ge 0`, or a list of K weights for K aux losses.
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses or gradients.
        process_group: ``"auto"``, ``None`` or a process group (see :class:`Surgeon`).

    Raises:
        ValueError: a weight is negative or not finite, or more than ``MAX_OBJECTIVES - 1``
            aux losses.

    Example:
        >>> import torch
        >>> from torchbloop.surgeons.mgda import MGDA
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> MGDA([w]).backward(main=w[0] * 1.0, aux=w[1] * 1.0)
        >>> w.grad  # orthogonal unit gradients: the midpoint
        tensor([0.5000, 0.5000])
    """

    max_aux: ClassVar[int | None] = MAX_OBJECTIVES - 1
    main_priority: ClassVar[bool] = False
    """The main loss has no priority here: generic checks should expect it to go down, not to
    go down as fast as on its own."""

    def __init__(
        self,
        params: ParamsT,
        *,
        lam: float | Sequence[float] = 1.0,
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
    ) -> None:
        super().__init__(
            params, lam=lam, foreach=foreach, nonfinite=nonfinite, process_group=process_group
        )

    def _formula(self) -> Formula:
        return MGDAFormula()
