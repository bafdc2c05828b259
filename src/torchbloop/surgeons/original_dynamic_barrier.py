"""The original Dynamic Barrier, as a surgeon (it needs the main loss value)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor

from .._validation import ParamsT
from ..distributed.data_parallel import ProcessGroupArg, data_parallel_group
from ..functional import Formula
from ..functional.original_dynamic_barrier import OriginalDynamicBarrierFormula
from ._base import NonFinite, Surgeon
from ._gradients import GradList


def _check_real(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}={value!r}: must be a real number (float)")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(
            f"Invalid {name}={value!r}: must be finite" + (" and > 0" if positive else "")
        )
    return v


class OriginalDynamicBarrier(Surgeon):
    r"""The original Dynamic Barrier (Gong, Liu and Liu, 2021): descend on the aux loss while a
    barrier keeps the main loss decreasing.

    .. math::
        \phi = \min\left(\alpha (L_m - L_{low}),\ \beta \|g_m\|^2\right), \qquad
        d = g_a + \max\left(0, \frac{\phi - \langle g_a, g_m\rangle}{\|g_m\|^2}\right) g_m

    :math:`L_m` is the main loss value of the step, :math:`\alpha` = ``alpha``, :math:`\beta`
    = ``beta``, :math:`L_{low}` = ``lower_bound`` (a lower bound of :math:`L_m`, 0 for most
    losses). Then :math:`\langle d, g_m\rangle = \max(\langle g_a, g_m\rangle, \phi) \ge \phi`:
    the main loss decreases at least at the barrier's rate, which shrinks as :math:`L_m`
    approaches its bound. Stateless; inner products global; :math:`\|g_m\| = 0` drops the
    main term (no epsilon).

    The main loss value comes from :meth:`backward` (summed over accumulated micro-batches and
    averaged over data-parallel ranks like the gradients) or is given to :meth:`combine`.

    When to use: the bilevel problem "minimise the aux loss among the minimisers of the main
    loss" with a known lower bound of the main loss (0 for cross-entropy or squared errors on
    data that can be fit). Unlike the lam-variant (:class:`~torchbloop.DynamicBarrier`), the
    direction's scale is the aux gradient's plus what the barrier needs; there is no ``lam``.

    Differences from the Bloop paper: its Section 4 writes this barrier with
    :math:`\|g_{aux}\|^2` where :math:`\|g_{main}\|^2` is meant; this is the corrected form
    (method.md section 6).

    Args:
        params: what a ``torch.optim`` optimizer takes.
        alpha: :math:`\alpha > 0`, the barrier's weight on the loss gap.
        beta: :math:`\beta > 0`, its cap relative to :math:`\|g_m\|^2`.
        lower_bound: :math:`L_{low}`, a lower bound of the main loss.
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses or gradients.
        process_group: ``"auto"``, ``None`` or a process group (see :class:`Surgeon`).

    Example:
        >>> import torch
        >>> from torchbloop.surgeons.original_dynamic_barrier import OriginalDynamicBarrier
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> OriginalDynamicBarrier([w]).backward(main=w[0] - 0.5, aux=w[1] - w[0])
        >>> w.grad  # L_m = 0.5, phi = min(0.5, 1): <d, g_m> = 0.5
        tensor([0.5000, 1.0000])
    """

    max_aux: ClassVar[int | None] = 1
    main_priority: ClassVar[bool] = False
    """The main loss has no priority here: generic checks should expect it to go down, not to
    go down as fast as on its own."""
    needs_main_loss: ClassVar[bool] = True
    """:meth:`combine` needs ``main_loss=`` (generic callers, e.g. test suites, can check)."""

    def __init__(
        self,
        params: ParamsT,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        lower_bound: float = 0.0,
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
    ) -> None:
        self.alpha = _check_real("alpha", alpha, positive=True)
        self.beta = _check_real("beta", beta, positive=True)
        self.lower_bound = _check_real("lower_bound", lower_bound, positive=False)
        # One aux loss, no weight: the base's lam is fixed to 1 and not a hyperparameter.
        super().__init__(
            params, lam=1.0, foreach=foreach, nonfinite=nonfinite, process_group=process_group
        )
        self._main_loss: Tensor | None = None
        self._pending_loss: Tensor | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "lower_bound": self.lower_bound}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        self.alpha = _check_real("alpha", hp["alpha"], positive=True)
        self.beta = _check_real("beta", hp["beta"], positive=True)
        self.lower_bound = _check_real("lower_bound", hp["lower_bound"], positive=False)

    def _formula(self) -> Formula:
        return OriginalDynamicBarrierFormula()

    def _levels(self) -> dict[str, tuple[float, ...]]:
        return {}  # no lam: a parameter group's own "lam" is refused

    def _blocks(
        self, index: list[int]
    ) -> tuple[dict[str, Any], list[int] | None, str | None, list[int]]:
        """The base's blocks, with the barrier's settings and the step's main loss value."""
        if self._main_loss is None:
            raise ValueError(
                "OriginalDynamicBarrier needs the main loss value: use backward(), or "
                "combine(main_grads, aux_grads, main_loss=...)"
            )
        hyper, coef_blocks, gram_blocks, active = super()._blocks(index)
        hyper = {
            **hyper,
            "alpha": self.alpha,
            "beta": self.beta,
            "lower_bound": self.lower_bound,
            "main_loss": self._main_loss,
        }
        return hyper, coef_blocks, gram_blocks, active

    def backward(
        self,
        main: Tensor,
        aux: Tensor | Sequence[Tensor],
        *,
        accumulate: bool = False,
        **kwargs: Any,
    ) -> None:
        """As :meth:`Surgeon.backward`; the main loss value enters the barrier (summed over
        accumulated micro-batches, averaged over data-parallel ranks). No host sync."""
        value = main.detach().to(torch.float64)
        if self._pending_loss is not None:
            value = value + self._pending_loss
        if accumulate:
            super().backward(main, aux, accumulate=True, **kwargs)
            self._pending_loss = value
            return
        group = data_parallel_group(self.process_group)
        if group is not None:
            value = value.clone()
            dist.all_reduce(value, group=group)
            value = value / dist.get_world_size(group)
        self._main_loss, self._pending_loss = value, None
        try:
            super().backward(main, aux, accumulate=False, **kwargs)
        finally:
            self._main_loss = None

    def combine(
        self,
        main_grads: GradList,
        aux_grads: GradList | Sequence[GradList],
        main_loss: Tensor | float | None = None,
        *,
        out: Sequence[Tensor | None] | None = None,
    ) -> GradList:
        """As :meth:`Surgeon.combine`, with the main loss value ``main_loss`` (required)."""
        if main_loss is None:
            raise ValueError(
                "Invalid main_loss=None: OriginalDynamicBarrier.combine needs the main loss value"
            )
        if isinstance(main_loss, Tensor):
            self._main_loss = main_loss.detach().to(torch.float64)
        else:
            self._main_loss = torch.tensor(_check_real("main_loss", main_loss, positive=False))
        try:
            return super().combine(main_grads, aux_grads, out=out)
        finally:
            self._main_loss = None
