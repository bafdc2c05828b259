"""Cosine gating, as a surgeon."""

from __future__ import annotations

from typing import Any, ClassVar

from .._validation import ParamsT, check_flag
from ..distributed.data_parallel import ProcessGroupArg
from ..functional import Formula
from ..functional.cosine_gating import CosineGatingFormula
from ._base import NonFinite, Surgeon


class CosineGating(Surgeon):
    r"""Cosine gating (Du et al., 2018, "Adapting Auxiliary Losses Using Gradient Similarity"):
    the aux gradient is used only when it agrees with the main one.

    .. math:: d = g_m + \lambda\, w\, g_a, \qquad
              w = \max(0, \cos(g_m, g_a)) \ \text{(weighted)}, \quad
              w = [\cos(g_m, g_a) > 0] \ \text{(unweighted)}

    :math:`\lambda` = ``lam``; ``weighted`` picks :math:`w`. With a positive cosine the
    unweighted form is Mixed; otherwise both give :math:`g_m`. Stateless; the cosine is global
    over all parameters; the cosine of a zero gradient is 0 (the gate closes; no epsilon).

    When to use: an aux loss that helps only some of the time (a related task, an auxiliary
    objective of uncertain use), where dropping it on conflicting steps is acceptable. The
    all-or-nothing gate is decided on the noisy batch gradients: with much noise the cosine
    is near 0 and the aux loss is mostly dropped (weighted) or used half the time (unweighted).

    Differences from the Bloop paper's Table 1: none; the weighted form is the paper's default
    (Du et al. propose both).

    Args:
        params: what a ``torch.optim`` optimizer takes.
        lam: :math:`\lambda \ge 0`.
        weighted: scale the aux gradient by the cosine (True) or only gate it (False).
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses or gradients.
        process_group: ``"auto"``, ``None`` or a process group (see :class:`Surgeon`).

    Example:
        >>> import torch
        >>> from torchbloop.surgeons.cosine_gating import CosineGating
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> CosineGating([w], lam=2.0, weighted=False).backward(main=w[0] * 1.0, aux=w.sum())
        >>> w.grad  # cos > 0: Mixed
        tensor([3., 2.])
    """

    max_aux: ClassVar[int | None] = 1

    def __init__(
        self,
        params: ParamsT,
        *,
        lam: float,
        weighted: bool = True,
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
    ) -> None:
        self.weighted = check_flag("weighted", weighted)
        super().__init__(
            params, lam=lam, foreach=foreach, nonfinite=nonfinite, process_group=process_group
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "weighted": self.weighted}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        super()._set_hyperparameters(hp)
        self.weighted = check_flag("weighted", hp["weighted"])

    def _formula(self) -> Formula:
        return CosineGatingFormula(weighted=self.weighted)
