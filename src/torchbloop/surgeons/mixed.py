"""Mixed: the usual regulariser, as a surgeon."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .._validation import ParamsT
from ..distributed.data_parallel import ProcessGroupArg
from ..functional import Formula, MixedFormula
from ._base import Granularity, NonFinite, Surgeon
from ._gradients import GradList
from ._lean import Capture, lean_mixed


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
        capture: ``"separate"`` (default), ``"lean"`` or ``"auto"``, as for
            :class:`~torchbloop.Bloop`: lean runs ``L_main`` backward, then every ``L_k``
            seeded with ``lam_k``, all accumulating into ``.grad`` (no per-loss gradient list;
            equal to the separate capture up to rounding). It applies when the main loss
            reaches every parameter that requires grad, without per-group ``lam``, gradient
            accumulation, ``GradScaler``, data-parallel averaging or sharded parameters; a
            non-finite gradient of an aux loss is then reported as the direction's.

    Example:
        >>> import torch
        >>> from torchbloop import Mixed
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> Mixed([w], lam=0.5).backward(main=w.sum(), aux=w.pow(2).sum() / 2)
        >>> w.grad
        tensor([1.5000, 2.0000])
    """

    _lean_capture = True

    def __init__(
        self,
        params: ParamsT,
        *,
        lam: float | Sequence[float],
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
        granularity: Granularity = "global",
        capture: Capture = "separate",
    ) -> None:
        super().__init__(
            params,
            lam=lam,
            foreach=foreach,
            nonfinite=nonfinite,
            process_group=process_group,
            granularity=granularity,
            capture=capture,
        )

    def _formula(self) -> Formula:
        return MixedFormula()

    def _lean_obstacle(
        self, *, accumulate: bool, scale: Tensor | None, sharded: bool
    ) -> str | None:
        if any("lam" in g for g in self.param_groups):
            return "per-group lam (one backward pass weights every group alike)"
        return super()._lean_obstacle(accumulate=accumulate, scale=scale, sharded=sharded)

    def _lean_backward(self, losses: list[Tensor], *, allow_unused: bool) -> list[GradList] | None:
        return lean_mixed(self, losses, allow_unused=allow_unused)
