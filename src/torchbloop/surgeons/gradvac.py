"""GradVac (the aux gradient adjusted toward the main one), as a surgeon."""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._validation import ParamsT
from ..distributed.data_parallel import ProcessGroupArg
from ..distributed.sharded import local
from ..functional import Formula, StepResult, SurgeryStep
from ..functional.gradvac import DEFAULT_BETA, TARGET_KEY, GradVacFormula
from ._base import METHOD, NonFinite, Surgeon

SCALAR_STATE = "scalars"
"""The state-dict entry holding GradVac's scalar state (``{"phi_hat": 0-dim float64}``)."""


def check_beta(beta: object) -> float:
    """GradVac's ``beta`` (weight of the new cosine) must be a real number in (0, 1]."""
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"Invalid beta={beta!r}: must be a real number (float)")
    if not 0.0 < float(beta) <= 1.0:
        raise ValueError(
            f"Invalid beta={beta!r}: must be in (0, 1] (the weight of the new cosine; "
            f"the GradVac paper uses {DEFAULT_BETA})"
        )
    return float(beta)


class GradVac(Surgeon):
    r"""GradVac (Wang et al., ICLR 2021, "Gradient Vaccine") in priority form: the aux gradient
    is moved toward the main one until their cosine reaches a target learnt from history.

    .. math::
        \phi = \cos(g_a, g_m), \quad
        g_a' = g_a + [\phi < \hat\phi]\,
        \frac{\|g_a\| \left(\hat\phi \sqrt{1-\phi^2} - \phi \sqrt{1-\hat\phi^2}\right)}
             {\|g_m\| \sqrt{1-\hat\phi^2}}\, g_m, \quad
        d = g_m + \lambda g_a', \quad
        \hat\phi \leftarrow (1-\beta)\hat\phi + \beta\phi

    :math:`\lambda` = ``lam``, :math:`\beta` = ``beta``, :math:`\hat\phi` (from 0) is the
    state, saved in the state dict (bit-exact round trip) under ``"scalars"``. After the
    adjustment :math:`\cos(g_a', g_m) = \hat\phi`. Inner products global; zero norms drop the
    adjustment and count as cosine 0 (no epsilon).

    When to use: an aux loss whose gradients are usually somewhat aligned with the main loss's
    (a related task or language), where you want to keep that typical alignment instead of only
    removing conflicts. The main gradient is never changed, but the adjusted aux term can still
    oppose it (the target may be negative), so the main loss is not strictly protected.

    ``beta`` defaults to 0.01, the value of the GradVac paper's experiments (LibMTL's and
    TorchJD's default of 0.5 is theirs, not the paper's). The paper keeps one target per task
    pair and layer; this is the whole-model target of the priority form (method.md section 6).
    Differences from the Bloop paper's Table 1: none in the formula; the aux gradient alone is
    adjusted (the original adjusts every task's gradient toward every other's).

    Args:
        params: what a ``torch.optim`` optimizer takes.
        lam: :math:`\lambda \ge 0`.
        beta: :math:`\beta \in (0, 1]`, the weight of the new cosine in the target's EMA.
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses or gradients.
        process_group: ``"auto"``, ``None`` or a process group (see :class:`Surgeon`).

    Example:
        >>> import torch
        >>> from torchbloop.surgeons.gradvac import GradVac
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> s = GradVac([w], lam=1.0, beta=0.5)
        >>> s.backward(main=w[0] * 1.0, aux=w.sum())  # cos = 0.707 >= 0 = target: unchanged
        >>> w.grad, s.phi_hat
        (tensor([2., 1.]), tensor(0.3536, dtype=torch.float64))
        >>> s.backward(main=w[0] * 1.0, aux=w[1] * 1.0)  # cos = 0 < 0.354: lifted to 0.354
        >>> w.grad
        tensor([1.3780, 1.0000])
    """

    max_aux: ClassVar[int | None] = 1

    def __init__(
        self,
        params: ParamsT,
        *,
        lam: float,
        beta: float = DEFAULT_BETA,
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
    ) -> None:
        self.beta = check_beta(beta)
        super().__init__(
            params, lam=lam, foreach=foreach, nonfinite=nonfinite, process_group=process_group
        )  # granularity "global": one target cosine for the whole model
        device = local(self._params[0]).device if self._params else torch.device("cpu")
        self.phi_hat: Tensor = torch.zeros((), dtype=torch.float64, device=device)
        """The target cosine :math:`\\hat\\phi` (0-dim float64; 0 before the first step)."""

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "beta": self.beta}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        super()._set_hyperparameters(hp)
        self.beta = check_beta(hp["beta"])

    def _formula(self) -> Formula:
        return GradVacFormula()

    def _blocks(
        self, index: list[int]
    ) -> tuple[dict[str, Any], list[int] | None, str | None, list[int]]:
        """The base's blocks, plus ``beta`` and the target (one for all blocks)."""
        hyper, coef_blocks, gram_blocks, active = super()._blocks(index)
        return (
            {**hyper, "beta": self.beta, TARGET_KEY: self.phi_hat},
            coef_blocks,
            gram_blocks,
            active,
        )

    def _after_step(self, step: SurgeryStep, result: StepResult) -> None:
        self.phi_hat = result.info[TARGET_KEY].reshape(-1)[0].clone()

    def state_dict(self) -> dict[str, Any]:
        """The base state dict plus ``"scalars": {"phi_hat": 0-dim float64 tensor}``."""
        sd = super().state_dict()
        sd[SCALAR_STATE] = {TARGET_KEY: self.phi_hat.clone()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; everything is validated before any change.

        Raises:
            TypeError, ValueError: the state dict does not fit (nothing changed).
        """
        if not isinstance(state_dict, dict) or state_dict.get(METHOD) != type(self).__name__:
            super().load_state_dict(state_dict)  # raises the base's error; nothing changed
        scalars = state_dict.get(SCALAR_STATE) if isinstance(state_dict, dict) else None
        target = scalars.get(TARGET_KEY) if isinstance(scalars, dict) else None
        if not isinstance(target, Tensor) or target.dim() != 0 or not target.is_floating_point():
            raise ValueError(
                f"Invalid state_dict: GradVac needs {SCALAR_STATE!r}: {{{TARGET_KEY!r}: a 0-dim "
                f"floating-point tensor}}, got {scalars!r}"
            )
        value = float(target)
        if not (math.isfinite(value) and -1.0 <= value <= 1.0):
            raise ValueError(f"Invalid state_dict: {TARGET_KEY}={value!r} must be in [-1, 1]")
        super().load_state_dict(state_dict)
        self.phi_hat = target.detach().to(self.phi_hat.device, torch.float64, copy=True)
