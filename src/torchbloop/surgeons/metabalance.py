"""MetaBalance (per-tensor gradient magnitudes), as a surgeon."""

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
from ..functional.metabalance import (
    DEFAULT_BETA,
    DEFAULT_R,
    NORM_KEYS,
    MetaBalanceFormula,
)
from ._base import METHOD, NonFinite, Surgeon

SCALAR_STATE = "scalars"
"""The state-dict entry holding the norm averages (``{"norm_main": [n], "norm_aux": [n]}``,
float64, one entry per parameter in the state dict's order)."""


def _check_unit(name: str, value: object, *, closed_high: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}={value!r}: must be a real number (float)")
    v = float(value)
    ok = 0.0 <= v <= 1.0 if closed_high else 0.0 <= v < 1.0
    if not (math.isfinite(v) and ok):
        bracket = "[0, 1]" if closed_high else "[0, 1)"
        raise ValueError(f"Invalid {name}={value!r}: must be in {bracket}")
    return v


class MetaBalance(Surgeon):
    r"""MetaBalance (He et al., WWW 2022): the aux gradient's magnitude adapted, tensor by
    tensor, to the main gradient's.

    .. math::
        m_{k,t} \leftarrow \beta m_{k,t} + (1-\beta) \|g_{k,t}\| \ (k \in \{m, a\}), \qquad
        d_t = g_{m,t} + \left(r \frac{m_{m,t}}{m_{a,t}} + 1 - r\right) g_{a,t}

    for every parameter tensor :math:`t`; :math:`r` = ``r`` (the relax factor),
    :math:`\beta` = ``beta``. The norm averages :math:`m` (from 0, updated before use) are the
    state, saved in the state dict under ``"scalars"`` (bit-exact round trip). With steady
    norms the aux term's norm is :math:`r \|g_{m,t}\| + (1 - r)\|g_{a,t}\|`. A tensor whose aux
    gradient has been zero so far keeps the factor :math:`1 - r` (no epsilon).

    When to use: an aux loss whose gradients are much larger or smaller than the main loss's
    (different units, different numbers of terms), where a weight ``lam`` would have to be
    re-tuned per layer and per stage of training. It balances magnitudes only: directions are
    not changed, so conflicting aux gradients still reach the main loss; there is no ``lam``
    (``r`` is the knob: 0 is Mixed with weight 1, 1 gives the aux term the main term's norm).

    Differences from the Bloop paper's Table 1: none in the formula; the paper's per-layer
    balance is per parameter tensor here.

    Args:
        params: what a ``torch.optim`` optimizer takes.
        r: the relax factor :math:`r \in [0, 1]` (the paper recommends 0.7).
        beta: :math:`\beta \in [0, 1)`, the weight of the old average (0.9 in the paper).
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` or ``"skip"`` steps with inf/NaN losses or gradients.
        process_group: ``"auto"``, ``None`` or a process group (see :class:`Surgeon`).

    Example:
        >>> import torch
        >>> from torchbloop.surgeons.metabalance import MetaBalance
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
        >>> MetaBalance([w], r=1.0).backward(main=3 * w[0] + 4 * w[1], aux=w[0] * 1.0)
        >>> w.grad  # first step: the aux gradient rescaled to ||g_m|| = 5
        tensor([8., 4.])
    """

    max_aux: ClassVar[int | None] = 1
    main_priority: ClassVar[bool] = False
    """The main loss has no priority here: generic checks should expect it to go down, not to
    go down as fast as on its own."""

    def __init__(
        self,
        params: ParamsT,
        *,
        r: float = DEFAULT_R,
        beta: float = DEFAULT_BETA,
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
    ) -> None:
        self.r = _check_unit("r", r, closed_high=True)
        self.beta = _check_unit("beta", beta, closed_high=False)
        # One aux loss, no weight: the base's lam is fixed to 1 and not a hyperparameter.
        super().__init__(
            params, lam=1.0, foreach=foreach, nonfinite=nonfinite, process_group=process_group
        )
        device = local(self._params[0]).device if self._params else torch.device("cpu")
        n = len(self._params)
        self.norm_main: Tensor = torch.zeros(n, dtype=torch.float64, device=device)
        """:math:`m_m` per parameter (float64; 0 before the first step)."""
        self.norm_aux: Tensor = torch.zeros(n, dtype=torch.float64, device=device)
        """:math:`m_a` per parameter."""
        self._index: Tensor | None = None
        self._index_key: tuple[int, ...] = ()

    def hyperparameters(self) -> dict[str, Any]:
        return {"r": self.r, "beta": self.beta}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        self.r = _check_unit("r", hp["r"], closed_high=True)
        self.beta = _check_unit("beta", hp["beta"], closed_high=False)

    def _formula(self) -> Formula:
        return MetaBalanceFormula()

    def _levels(self) -> dict[str, tuple[float, ...]]:
        return {}  # no lam: a parameter group's own "lam" is refused

    def _blocks(
        self, index: list[int]
    ) -> tuple[dict[str, Any], list[int] | None, str | None, list[int]]:
        """Per-tensor inner products and coefficients: one block per parameter of the step,
        with that parameter's norm averages."""
        _, _, _, active = super()._blocks(index)
        step_index = [index[pos] for pos in active]
        key = tuple(step_index)
        if self._index is None or self._index_key != key:  # the same parameters every step
            self._index = torch.tensor(step_index, dtype=torch.long).to(self.norm_main.device)
            self._index_key = key
        hyper = {
            "r": self.r,
            "beta": self.beta,
            NORM_KEYS[0]: self.norm_main.index_select(0, self._index),
            NORM_KEYS[1]: self.norm_aux.index_select(0, self._index),
        }
        return hyper, list(range(len(step_index))), "tensor", active

    def _after_step(self, step: SurgeryStep, result: StepResult) -> None:
        assert self._index is not None
        self.norm_main = self.norm_main.index_copy(0, self._index, result.info[NORM_KEYS[0]])
        self.norm_aux = self.norm_aux.index_copy(0, self._index, result.info[NORM_KEYS[1]])

    def state_dict(self) -> dict[str, Any]:
        """The base state dict plus ``"scalars"``: the norm averages per parameter."""
        sd = super().state_dict()
        sd[SCALAR_STATE] = {
            NORM_KEYS[0]: self.norm_main.clone(),
            NORM_KEYS[1]: self.norm_aux.clone(),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; everything is validated before any change.

        Raises:
            TypeError, ValueError: the state dict does not fit (nothing changed).
        """
        if not isinstance(state_dict, dict) or state_dict.get(METHOD) != type(self).__name__:
            super().load_state_dict(state_dict)  # raises the base's error; nothing changed
        scalars = state_dict.get(SCALAR_STATE) if isinstance(state_dict, dict) else None
        n = len(self._params)
        loaded = []
        for key in NORM_KEYS:
            t = scalars.get(key) if isinstance(scalars, dict) else None
            if not isinstance(t, Tensor) or t.shape != (n,) or not t.is_floating_point():
                raise ValueError(
                    f"Invalid state_dict: MetaBalance needs {SCALAR_STATE!r}: {{{key!r}: a "
                    f"floating-point tensor of shape ({n},)}}, got {scalars!r}"
                )
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
                raise ValueError(f"Invalid state_dict: {key} must be finite and >= 0")
            loaded.append(t.detach().to(self.norm_main.device, torch.float64, copy=True))
        super().load_state_dict(state_dict)
        self.norm_main, self.norm_aux = loaded
