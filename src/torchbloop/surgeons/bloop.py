"""Bloop: the stateful surgeon (main gradient + lam * aux gradients projected off EMAs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from .._validation import ParamsT, check_choice, check_flag, check_rhos
from ..distributed.data_parallel import ProcessGroupArg
from ..distributed.sharded import local
from ..functional import BloopFormula, Formula, StepResult, SurgeryStep
from ._base import Granularity, NonFinite, Surgeon
from ._gradients import GradList
from ._lean import Capture, lean_bloop
from ._state import StateSpec

EMA_KEY = "main_grad_ema"
"""State-dict key of the EMA of main-loss gradients (level 0; one tensor per parameter)."""


def ema_key(level: int) -> str:
    """State-dict key of the EMA of level ``level``: ``main_grad_ema``, ``aux1_grad_ema``, ..."""
    return EMA_KEY if level == 0 else f"aux{level}_grad_ema"


EmaOrder = Literal["paper", "code"]


class BloopDiagnostics(NamedTuple):
    """Per-step diagnostics of :class:`Bloop` (float64 tensors on the gradients' device).

    With one auxiliary loss every field is a 0-dim tensor; with K of them each field has one
    entry per level ``k = 1..K`` (shape ``[K]``). With several blocks of inner products
    (``granularity="group"``/``"tensor"``, or per-group ``lam``/``rho``) a leading dimension
    holds one entry per block. Reading them (``float(...)``) synchronises with the device;
    keeping them does not. On a step skipped because a loss or gradient was not finite the
    values are NaN and ``step_skipped`` is True.
    """

    cos_main_ema: Tensor
    """Cosine between the current gradient of the level above and the EMA it is kept in
    (level 1: ``cos(g_main, e_0)``)."""
    coef: Tensor
    """Projection coefficient ``<g_k, e_{k-1}> / ||e_{k-1}||^2`` (0 when skipped; with one
    aux loss ``<g_aux, e> / ||e||^2``)."""
    removed_fraction: Tensor
    """Fraction of ``||g_k||^2`` removed by the projection (K = 1: ``cos(g_aux, e)^2``)."""
    skipped: Tensor
    """True when the PROJECTION was skipped: every EMA it projects on had a zero or non-finite
    norm, so nothing was projected out (the step itself happened)."""
    leak: Tensor
    """``lam_k <P_k g_k, g_main> / ||g_main||^2``: how much of level k's term still points
    along the current main gradient (0 when ``g_main`` is zero)."""
    step_skipped: Tensor
    """True when the whole step was skipped (non-finite loss or gradient, ``nonfinite="skip"``
    or a loss scaler's overflow); the other fields are then NaN."""


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
        lam: :math:`\lambda \ge 0`, the weight of the projected auxiliary gradient (or a list
            of K weights for K auxiliary losses in priority order).
        rho: :math:`\rho \in (0, 1]`, the EMA's weight of the new main gradient (paper: 0.01);
            with K levels one value for every EMA or a list of K.
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
        granularity: ``"global"`` (default, the paper's), ``"group"`` or ``"tensor"``: the
            blocks over which inner products are taken.
        process_group: ``"auto"`` (default): average the gradients over the default process
            group when one is initialised with several ranks (DDP works unchanged); a group:
            average over it; ``None``: never average. Sharded (FSDP2/DTensor) parameters keep
            a sharded EMA and need one ``all_reduce`` of the stacked inner products per step.
        capture: how :meth:`backward` obtains the gradients. ``"separate"`` (default): one
            gradient list per loss, combined afterwards. ``"lean"``: the surgery runs inside
            ``.grad`` between ordinary backward passes, so no second gradient list exists: on
            a parameter-dominated model a step costs plain training's memory plus the EMA
            (about one parameter-sized buffer less than the separate capture), at the price of
            a few more passes over the gradients (7-13% slower per step on the CPU in
            ``make bench``; equal on an activation-dominated LM, where both captures peak
            alike); see ``torchbloop/surgeons/_lean.py``. ``"auto"``: lean wherever it
            applies, separate elsewhere. Lean applies with one aux loss, no diagnostics, and a
            call without gradient accumulation, ``GradScaler``, data-parallel averaging or
            sharded parameters (and no parameter group with ``lam = 0``; no per-group ``lam``
            on step 1 or in "code" order); ``"auto"`` also wants ``nonfinite="raise"``;
            ``"lean"`` refuses a call it cannot run (``ValueError``, nothing changed). Both
            captures give the same direction and EMA up to rounding. A step whose first
            backward pass (aux in "paper" order, main in "code" order and on step 1) misses
            a parameter that requires grad captures the other loss separately (no backward
            pass is repeated). In lean mode a non-finite gradient of the second backward pass
            is found after the EMA was advanced: ``.grad`` is restored and the EMA restarts
            from the next step (the error says so); everything else is checked before
            anything changes, as in the separate mode.

    The EMA is created lazily from the first main gradient, so the first step projects on it.
    When ``||e||^2`` is zero or not finite the projection is skipped for that step (reported in
    the diagnostics); there is no epsilon. Every ``backward``/``combine`` call is one EMA step:
    with ``torch.optim.LBFGS``, whose closure runs several times per optimizer step, the EMA
    advances once per closure call (call the surgeon outside the closure, or accept a faster
    EMA).

    Several auxiliary losses (method.md section 7): ``lam`` a list of K weights, highest
    priority first, and ``aux`` a list of K losses; one EMA per level above the last (``rho``
    one value for all or one per EMA), and level k is projected off the span of the EMAs
    ``e_0..e_{k-1}`` (Gram-Schmidt with a scale-free rank test). K = 1 is the paper's Bloop.

    Parameter groups may carry their own ``lam`` and ``rho``; ``granularity="group"`` or
    ``"tensor"`` computes the inner products (and so the projection) per group or per tensor
    instead of over all parameters; a group whose own ``lam`` is 0 sits out of the surgery
    (its direction is its main gradient; its EMA is not kept up to date).

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
    _lean_capture = True

    def __init__(
        self,
        params: ParamsT,
        *,
        lam: float | Sequence[float],
        rho: float | Sequence[float] = 0.01,
        ema_order: EmaOrder = "paper",
        ema_dtype: torch.dtype | None = None,
        diagnostics: bool = False,
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
        self._rhos = check_rhos(rho, self.num_aux)
        self._rho_is_float = not isinstance(rho, Sequence)
        self.ema_order: EmaOrder = check_choice("ema_order", ema_order, ("paper", "code"))  # type: ignore[assignment]
        if ema_dtype is not None and not (
            isinstance(ema_dtype, torch.dtype) and ema_dtype.is_floating_point
        ):
            raise TypeError(
                f"Invalid ema_dtype={ema_dtype!r}: must be a floating-point torch.dtype or None"
            )
        self.ema_dtype = ema_dtype
        self.diagnostics_enabled = check_flag("diagnostics", diagnostics)
        self.emas: list[list[Tensor]] | None = None
        """The EMAs ``e_0..e_{K-1}``, one list per level (``None`` until the first step)."""
        self.diagnostics: BloopDiagnostics | None = None
        groups = self._check_groups()
        if self.ema_order == "code" and granularity == "global":
            if len({g["rho"] for g in groups}) > 1:
                raise ValueError(
                    "Invalid parameter groups: per-group rho with ema_order='code' needs "
                    "granularity='group' or 'tensor' (the inner products of one block see one EMA)"
                )
        if self.capture == "lean":
            reason = self._lean_settings_obstacle()
            if reason is not None:
                raise ValueError(f"Invalid capture='lean': {reason}; use 'auto' or 'separate'")

    @property
    def ema(self) -> list[Tensor] | None:
        """The EMA of main gradients ``e_0`` (one tensor per parameter), ``None`` before step 1."""
        return None if self.emas is None else self.emas[0]

    @property
    def rho(self) -> Any:
        """:math:`\\rho \\in (0, 1]`, the EMAs' weight of the new gradient (a float, or one per EMA)."""
        return self._rhos[0] if self._rho_is_float else self._rhos

    @rho.setter
    def rho(self, value: float | Sequence[float]) -> None:
        self._rhos = check_rhos(value, self.num_aux)
        self._rho_is_float = not isinstance(value, Sequence)

    def hyperparameters(self) -> dict[str, Any]:
        rho = self._rhos[0] if self._rho_is_float else list(self._rhos)
        return {**super().hyperparameters(), "rho": rho, "ema_order": self.ema_order}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        super()._set_hyperparameters(hp)
        self.rho = hp["rho"]
        self.ema_order = check_choice("ema_order", hp["ema_order"], ("paper", "code"))  # type: ignore[assignment]

    # ------------------------------------------------------------------ state
    def state_spec(self) -> StateSpec:
        return StateSpec(keys=tuple(ema_key(k) for k in range(self.num_aux)), dtype=self.ema_dtype)

    def _state_lists(self) -> list[list[Tensor]] | None:
        return self.emas

    def _set_state_lists(self, lists: list[list[Tensor]] | None) -> None:
        self.emas = lists

    # ------------------------------------------------------------------ the step
    def _formula(self) -> Formula:
        return BloopFormula(self.ema_order)

    def _levels(self) -> dict[str, tuple[float, ...]]:
        return {"lam": self._lams, "rho": self._rhos}

    def _step_state(
        self, grads: list[list[Tensor]], index: list[int]
    ) -> tuple[list[list[Tensor]], list[list[Tensor]] | None]:
        """The EMAs; before the first step new ones, level j starting from ``g_j`` (kept only
        if the step happens)."""
        fresh = None
        emas = self.emas
        if emas is None:
            fresh = emas = self.state_spec().zeros(self._params)
            for level, ema in enumerate(emas):
                for i, g in zip(index, grads[level]):
                    local(ema[i]).copy_(g)
        return [[local(ema[i]) for i in index] for ema in emas], fresh

    def _after_step(self, step: SurgeryStep, result: StepResult) -> None:
        if not self.diagnostics_enabled:
            return
        gram = step.gram()
        blocks = len(step.eff_gram)
        if blocks == 1:
            self.diagnostics = diagnostics_from(gram[0], result.info, self._rhos, self.ema_order)
            return
        groups = self._check_groups()
        rhos = [groups[g]["rho"] for g in self._step_groups]  # the coefficient blocks' groups
        per_block = [
            diagnostics_from(
                gram[step.eff_gram[b]],
                {key: value[b : b + 1] for key, value in result.info.items()},
                rhos[step.eff_coef[b]] if len(rhos) > 1 else rhos[0],
                self.ema_order,
            )
            for b in range(blocks)
        ]
        self.diagnostics = BloopDiagnostics(*(torch.stack(f) for f in zip(*per_block)))

    # ------------------------------------------------------------------ lean capture
    def _lean_settings_obstacle(self) -> str | None:
        """What in the surgeon's settings rules lean capture out (see :mod:`._lean`)."""
        if self.num_aux > 1:
            return (
                "several auxiliary losses (a level between the first and the last needs both "
                "its raw gradient, for its EMA, and its weighted projection)"
            )
        if self.diagnostics_enabled:
            return "diagnostics need inner products of the main and aux gradients together"
        return None

    def _lean_obstacle(self, *, accumulate: bool, scale: Any, sharded: bool) -> str | None:
        reason = self._lean_settings_obstacle()
        if reason is None:
            reason = super()._lean_obstacle(accumulate=accumulate, scale=scale, sharded=sharded)
        if reason is None and (self.emas is None or self.ema_order == "code"):
            if any("lam" in g for g in self.param_groups):
                return (
                    "per-group lam where the main loss goes first (code order, first step): one "
                    "backward pass weights every group alike"
                )
        return reason

    def _lean_auto_obstacle(self) -> str | None:
        if self.nonfinite == "skip":
            return "nonfinite='skip' keeps the EMA of a skipped step, which lean capture cannot"
        return None

    def _lean_backward(self, losses: list[Tensor], *, allow_unused: bool) -> list[GradList] | None:
        return lean_bloop(self, losses, allow_unused=allow_unused)

    def _on_skipped_step(self) -> None:
        if self.diagnostics_enabled:
            self.diagnostics = skipped_step_diagnostics(self.num_aux, local(self._params[0]).device)


def skipped_step_diagnostics(k: int, device: torch.device) -> BloopDiagnostics:
    """The diagnostics of a step skipped as non-finite: NaN values, both flags True."""
    shape: tuple[int, ...] = () if k == 1 else (k,)
    nan = torch.full(shape, float("nan"), dtype=torch.float64, device=device)
    yes = torch.ones(shape, dtype=torch.bool, device=device)
    return BloopDiagnostics(nan, nan.clone(), nan.clone(), yes, nan.clone(), yes.clone())


def diagnostics_from(
    gram: Tensor, info: dict[str, Tensor], rhos: Sequence[float], order: EmaOrder
) -> BloopDiagnostics:
    """Per-level diagnostics from one block's Gram matrix and the formula's info (no sync).

    ``b_j`` is the EMA the projection used (``e_j``, or the updated one in "code" order).
    """
    g = gram
    k = len(rhos)
    n = g.shape[0]
    levels = torch.arange(1, k + 1, device=g.device)
    prev = levels - 1
    mix = g.new_zeros((k, n))  # b_j = sum_i mix[j, i] v_i
    rho = torch.tensor(rhos, dtype=g.dtype, device=g.device)
    mix[prev, k + 1 + prev] = 1.0 if order == "paper" else 1.0 - rho
    if order == "code":
        mix[prev, prev] = rho
    gbv = mix @ g  # <b_j, v_i>
    gbb = gbv @ mix.T  # <b_i, b_j>
    bb = gbb.diagonal()
    g_prev = g[prev, prev]
    cos_den = g_prev.sqrt() * bb.sqrt()
    cos = torch.where(cos_den > 0, gbv[prev, prev] / torch.where(cos_den > 0, cos_den, 1.0), 0.0)
    beta = info["coef"][0]  # P_k g_k = g_k - sum_l beta[k-1, l] b_l
    g_kk = g[levels, levels]
    removed_sq = (beta * (beta @ gbb)).sum(-1)
    removed = torch.where(g_kk > 0, removed_sq / torch.where(g_kk > 0, g_kk, 1.0), 0.0)
    skipped = info["skipped"][0].reshape(k).cumprod(0).bool()  # every EMA above was dropped
    fields = [cos, beta[prev, prev], removed, skipped, info["leak"][0].reshape(k)]
    fields.append(torch.zeros_like(skipped))
    if k == 1:
        fields = [t.reshape(()) for t in fields]
    return BloopDiagnostics(*fields)
