"""Bloop: the stateful surgeon (main gradient + lam * aux gradient projected off an EMA)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from .._validation import ParamsT, check_choice, check_rho
from ..distributed.data_parallel import ProcessGroupArg
from ..distributed.sharded import local
from ..functional import (
    Reducer,
    bloop_update_,
    ema_update_,
    global_dots,
    projection_coefficient,
)
from ._base import NonFinite, Surgeon

EMA_KEY = "main_grad_ema"
"""State-dict key of the EMA of main-loss gradients (one tensor per parameter)."""

EmaOrder = Literal["paper", "code"]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class BloopDiagnostics(NamedTuple):
    """Per-step diagnostics of :class:`Bloop` (0-dim tensors on the gradients' device).

    Reading them (``float(...)``) synchronises with the device; keeping them does not.
    """

    cos_main_ema: Tensor
    """Cosine between the current main gradient and the EMA used for the projection."""
    coef: Tensor
    """Projection coefficient ``<g_aux, e> / ||e||^2`` (0 when skipped)."""
    removed_fraction: Tensor
    """Fraction of ``||g_aux||^2`` removed by the projection: ``cos(g_aux, e)^2``."""
    skipped: Tensor
    """True when ``||e||^2`` was zero or not finite and nothing was projected out."""


class Bloop(Surgeon):
    r"""Bloop (BiLevel Optimization with Orthogonal Projection), Hsieh et al., ICML 2024.

    Each step hands the optimizer, as if it were the gradient,

    .. math::  d = g_{main} + \lambda \left(g_{aux} - \frac{\langle g_{aux}, e\rangle}{\|e\|^2} e\right),
               \qquad e \leftarrow (1 - \rho)\, e + \rho\, g_{main}

    where ``g_main``/``g_aux`` are the mini-batch gradients of the main and auxiliary losses,
    ``lam`` is :math:`\lambda` and ``rho`` is :math:`\rho`, the weight of the NEW gradient in the
    exponential moving average ``e`` of main gradients (Eq. 5 of the paper). Inner products are
    global over all parameters of the surgeon and accumulated in at least float32. To first
    order the main loss then decreases as under plain training, while the auxiliary loss is
    minimised among the minimisers of the main loss.

    Args:
        params: what a ``torch.optim`` optimizer takes (tensors or parameter-group dicts).
        lam: :math:`\lambda \ge 0`, the weight of the projected auxiliary gradient.
        rho: :math:`\rho \in (0, 1]`, the EMA's weight of the new main gradient (paper: 0.01).
        ema_order: ``"paper"`` (default; Algorithm 1): project on the EMA of the PREVIOUS steps,
            then update it with the current gradient. ``"code"`` (the authors' code): update the
            EMA with the current gradient first, then project on it; with ``rho=1`` this
            projects on the current batch gradient (Eq. 3 on mini-batches).
        ema_dtype: dtype of the EMA; default float32 for float16/bfloat16 parameters, else the
            parameter's dtype. Kept through :meth:`load_state_dict`.
        diagnostics: compute :class:`BloopDiagnostics` every step (a few extra inner products;
            in "code" order also a temporary copy of the EMA).
        foreach: use the multi-tensor kernels.
        nonfinite: ``"raise"`` (default) on an inf/NaN loss or gradient, or ``"skip"`` the step
            (``.grad`` and the EMA untouched, ``skipped_steps`` incremented). Either costs one
            host synchronisation per step.
        process_group: ``"auto"`` (default): average the gradients over the default process
            group when one is initialised with several ranks (DDP works unchanged); a group:
            average over it; ``None``: never average. Sharded (FSDP2/DTensor) parameters keep
            a sharded EMA and need one ``all_reduce`` of the stacked inner products per step.

    The EMA is created lazily from the first main gradient, so the first step projects on it.
    When ``||e||^2`` is zero or not finite the projection is skipped for that step (reported in
    the diagnostics); there is no epsilon.

    Differences from the authors' code: ``rho`` is the weight of the new gradient (their
    ``ema`` argument too, default 0.1 there, 0.01 here as in the paper); the default order is
    the paper's; no ``1e-7`` is added to ``||e||^2``; the EMA starts from the first gradient,
    not from the parameters.

    Example:
        >>> import torch
        >>> from torchbloop import Bloop
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> surgeon = Bloop(model.parameters(), lam=0.1, rho=0.01)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> main = torch.nn.functional.mse_loss(model(x), y)
        >>> aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
        >>> opt.zero_grad()
        >>> surgeon.backward(main=main, aux=aux)
        >>> opt.step()
        >>> surgeon.step_count
        1

    Reference:
        Hsieh, Thornton, Ndiaye, Klein, Cuturi, Ablin. "Careful with that Scalpel: Improving
        Gradient Surgery with an EMA." ICML 2024 (PMLR 235:19085-19100), arXiv:2402.02998.
    """

    _supports_sharding = True

    def __init__(
        self,
        params: ParamsT,
        *,
        lam: float,
        rho: float = 0.01,
        ema_order: EmaOrder = "paper",
        ema_dtype: torch.dtype | None = None,
        diagnostics: bool = False,
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
    ) -> None:
        super().__init__(
            params, lam=lam, foreach=foreach, nonfinite=nonfinite, process_group=process_group
        )
        self._rho = check_rho(rho)
        self.ema_order: EmaOrder = check_choice("ema_order", ema_order, ("paper", "code"))  # type: ignore[assignment]
        if ema_dtype is not None and not (
            isinstance(ema_dtype, torch.dtype) and ema_dtype.is_floating_point
        ):
            raise TypeError(
                f"Invalid ema_dtype={ema_dtype!r}: must be a floating-point torch.dtype or None"
            )
        self.ema_dtype = ema_dtype
        self.diagnostics_enabled = bool(diagnostics)
        self.ema: list[Tensor] | None = None
        self.diagnostics: BloopDiagnostics | None = None

    @property
    def rho(self) -> float:
        """:math:`\\rho \\in (0, 1]`, the EMA's weight of the new main gradient."""
        return self._rho

    @rho.setter
    def rho(self, value: float) -> None:
        self._rho = check_rho(value)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lam": self.lam, "rho": self._rho, "ema_order": self.ema_order}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        super()._set_hyperparameters(hp)
        self.rho = hp["rho"]
        self.ema_order = check_choice("ema_order", hp["ema_order"], ("paper", "code"))  # type: ignore[assignment]

    def _ema_dtype_for(self, p: Tensor) -> torch.dtype:
        if self.ema_dtype is not None:
            return self.ema_dtype
        return torch.float32 if p.dtype in _LOW_PRECISION else p.dtype

    def _init_ema(self, main: list[Tensor], index: list[int]) -> list[Tensor]:
        ema = [
            torch.zeros_like(p, dtype=self._ema_dtype_for(p), memory_format=torch.contiguous_format)
            for p in self._params
        ]
        for i, g in zip(index, main):
            local(ema[i]).copy_(g)
        return ema

    def _direction(self, main: list[Tensor], aux: list[Tensor], index: list[int]) -> list[Tensor]:
        if self.ema is None:
            self.ema = self._init_ema(main, index)
        ema = [local(self.ema[i]) for i in index]
        if self.diagnostics_enabled:
            # Diagnostics look at the EMA the projection uses: the updated one in "code" order
            # (a temporary copy here, so that the direction below is computed exactly as
            # without diagnostics).
            seen = ema
            if self.ema_order == "code":
                seen = [e.clone() for e in ema]
                ema_update_(seen, main, rho=self._rho, foreach=self.foreach)
            self.diagnostics = _diagnostics(main, aux, seen, reduce=self._reduce)
        return bloop_update_(
            main,
            aux,
            ema,
            lam=self.lam,
            rho=self._rho,
            ema_order=self.ema_order,
            out=aux,
            foreach=self.foreach,
            reduce=self._reduce,
        ).direction

    def _method_state(self) -> dict[int, dict[str, Tensor]]:
        if self.ema is None:
            return {}
        return {i: {EMA_KEY: e} for i, e in enumerate(self.ema)}

    def _check_method_state(
        self, state: dict[int, dict[str, Tensor]]
    ) -> dict[int, dict[str, Tensor]]:
        if not state:
            return {}
        if sorted(state) != list(range(len(self._params))):
            raise ValueError(
                f"Invalid state_dict: EMA entries for indices {sorted(state)[:8]}... do not fit "
                f"{len(self._params)} parameters"
            )
        checked = {}
        for i, p in enumerate(self._params):
            entry = state[i]
            if (
                not isinstance(entry, dict)
                or EMA_KEY not in entry
                or not isinstance(entry[EMA_KEY], Tensor)
            ):
                raise ValueError(f"Invalid state_dict: parameter {i} has no {EMA_KEY!r} tensor")
            e = entry[EMA_KEY]
            if e.shape != p.shape:
                raise ValueError(
                    f"Invalid state_dict: {EMA_KEY} of parameter {i} has shape {tuple(e.shape)}, "
                    f"the parameter {tuple(p.shape)}"
                )
            checked[i] = {EMA_KEY: e.to(device=p.device, dtype=self._ema_dtype_for(p), copy=True)}
        return checked

    def _load_method_state(self, state: dict[int, dict[str, Tensor]]) -> None:
        self.ema = [state[i][EMA_KEY] for i in range(len(self._params))] if state else None


def _diagnostics(
    main: list[Tensor], aux: list[Tensor], ema: list[Tensor], reduce: Reducer | None = None
) -> BloopDiagnostics:
    d = global_dots([(main, ema), (main, main), (ema, ema), (aux, ema), (aux, aux)], reduce=reduce)
    main_ema, main_main, ema_ema, aux_ema, aux_aux = d.unbind()
    coef, skipped = projection_coefficient(aux_ema, ema_ema)
    # sqrt of each factor: their product overflows float32 at gradient scales ~1e10
    cos, _ = projection_coefficient(main_ema, main_main.sqrt() * ema_ema.sqrt())
    removed, _ = projection_coefficient(coef * aux_ema, aux_aux)
    return BloopDiagnostics(cos, coef, removed, skipped)
