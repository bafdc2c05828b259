"""The surgeon base class: gradients in, one direction out, written to ``.grad``.

A surgeon owns a list of parameters and the method's state. ``backward`` is a short pipeline of
named stages (:mod:`._stages`): check the losses, capture one gradient list per loss, unscale,
accumulate micro-batches, average over data-parallel ranks, then the surgery (finiteness and
the method's combination) and the write into ``.grad``. ``combine`` enters the same surgery
with gradients the caller already has. The method itself is a formula of the functional
contract (:class:`~torchbloop.functional.Formula`: the inner products it needs, its
coefficients) plus the declaration of its state (:meth:`Surgeon.state_spec`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from .._validation import (
    NonFiniteGradientError,
    ParamsT,
    check_choice,
    check_flag,
    check_grad_list,
    check_lams,
    check_rhos,
    collect_params,
)
from ..amp import autocast_disabled, loss_scale, poison_
from ..distributed.data_parallel import ProcessGroupArg, data_parallel_group
from ..distributed.sharded import (
    ShardedReducer,
    as_sharded_like,
    is_sharded,
    local,
    sharded_reducer,
)
from ..functional import Formula, StepResult, SurgeryStep
from . import _stages as stages
from ._finite import check_step
from ._gradients import GradList, dense
from ._lean import CAPTURES, Capture
from ._reuse import DirectionBuffers
from ._state import SCALARS, StateSpec, check_count

NonFinite = Literal["raise", "skip"]
Granularity = Literal["global", "group", "tensor"]

STATE = "state"
STEP = "step"
SKIPPED = "skipped_steps"
HYPERPARAMETERS = "hyperparameters"
PARAM_GROUPS = "param_groups"
METHOD = "method"
GROUP_KEYS = ("lam", "rho")
"""The settings a parameter group may carry (saved with the group in the state dict)."""


def check_process_group(value: object) -> ProcessGroupArg:
    """``"auto"``, ``None`` or a ``torch.distributed.ProcessGroup``."""
    if value is None or value == "auto":
        return value  # type: ignore[return-value]
    if isinstance(value, str) or not (dist.is_available() and isinstance(value, dist.ProcessGroup)):
        raise ValueError(f"Invalid process_group={value!r}: must be 'auto', a ProcessGroup or None")
    return value


class Surgeon(ABC):
    """Base class of all surgeons (``Bloop``, ``Mixed``, ``PCGrad``, ``DynamicBarrier``).

    A method is its :class:`~torchbloop.functional.Formula` (:meth:`_formula`, interface B),
    its hyperparameters (:meth:`_hyper`) and, if it keeps state, the declaration of its
    buffers (:meth:`state_spec`); this class handles parameters, gradient capture,
    accumulation, missing gradients, finiteness checks, ``.grad`` and the state dict.
    :func:`surgeon_for` builds the surgeon of a stateless formula with no code at all.

    Distributed training: with ``process_group="auto"`` (the default) and an initialised process
    group of several ranks, :meth:`backward` averages the gradients over the ranks itself (one
    collective for all losses; see :mod:`torchbloop.distributed.data_parallel`), so a model
    wrapped in ``DistributedDataParallel`` trains as in one process. Pass ``process_group=None``
    when the ranks must not be averaged (e.g. independent runs), or a group to average over that
    group. Sharded (FSDP2/DTensor) parameters are detected and handled by subclasses that set
    ``_supports_sharding`` (see :mod:`torchbloop.distributed.sharded`).

    Each call of :meth:`backward` or :meth:`combine` is one step of the method: it advances the
    method's state (Bloop's EMA). An optimizer that evaluates its closure several times per
    step (``torch.optim.LBFGS``) therefore advances the state once per closure call.
    """

    _supports_sharding: ClassVar[bool] = True
    """Whether the method works on sharded (DTensor) parameters (every formula does: its
    inner products are reduced over the mesh by the contract)."""
    max_aux: ClassVar[int | None] = None
    """How many auxiliary losses the method takes (``None``: any number K)."""
    _lean_capture: ClassVar[bool] = False
    """Whether the method can run its surgery inside ``.grad`` (:mod:`._lean`; Bloop, Mixed)."""

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
        self.param_groups, self._params = collect_params(params)
        self._lams = self._check_lam(lam)
        self._lam_is_float = len(self._lams) == 1 and not isinstance(lam, Sequence)
        self.foreach = check_flag("foreach", foreach)
        self.nonfinite: NonFinite = check_choice("nonfinite", nonfinite, ("raise", "skip"))  # type: ignore[assignment]
        self.process_group: ProcessGroupArg = check_process_group(process_group)
        self.granularity: Granularity = check_choice(  # type: ignore[assignment]
            "granularity", granularity, ("global", "group", "tensor")
        )
        self.capture: Capture = check_choice("capture", capture, CAPTURES)  # type: ignore[assignment]
        if self.capture == "lean" and not self._lean_capture:
            raise ValueError(
                f"Invalid capture='lean': {type(self).__name__} captures one gradient list per "
                "loss (lean capture exists for Bloop and Mixed); use 'auto' or 'separate'"
            )
        self._group_of = [g for g, group in enumerate(self.param_groups) for _ in group["params"]]
        self._step_groups: list[int] = [0]  # the groups of the last step's coefficient blocks
        if type(self)._levels is Surgeon._levels:  # subclasses with more settings check later
            self._check_groups()
        self.step_count = 0
        self.skipped_steps = 0
        self._accumulator = stages.Accumulator()
        self._reduce: ShardedReducer | None = None
        self._direction_buffers = DirectionBuffers()

    # ------------------------------------------------------------------ hyperparameters
    def _check_lam(self, lam: object) -> tuple[float, ...]:
        lams = check_lams(lam)
        if self.max_aux is not None and len(lams) > self.max_aux:
            raise ValueError(
                f"Invalid lam={list(lams)!r}: {type(self).__name__} takes at most "
                f"{self.max_aux} auxiliary loss(es); use Bloop or Mixed for several"
            )
        if hasattr(self, "_lams") and len(lams) != len(self._lams):
            raise ValueError(
                f"Invalid lam={lam!r}: this surgeon was built for {len(self._lams)} auxiliary "
                "losses; give as many weights"
            )
        return lams

    def _levels(self) -> dict[str, tuple[float, ...]]:
        """The surgeon-wide hyperparameters that parameter groups may override, per level."""
        return {"lam": self._lams}

    def _check_groups(self) -> list[dict[str, tuple[float, ...]]]:
        """Every group's settings (its own ``lam``/``rho`` or the surgeon's), validated."""
        defaults = self._levels()
        out = []
        for g, group in enumerate(self.param_groups):
            values = dict(defaults)
            for key in ("lam", "rho"):
                if key not in group:
                    continue
                if key not in defaults:
                    raise ValueError(
                        f"Invalid parameter group {g}: {type(self).__name__} has no {key!r}"
                    )
                value = (
                    check_lams(group[key]) if key == "lam" else check_rhos(group[key], self.num_aux)
                )
                if len(value) != self.num_aux:
                    raise ValueError(
                        f"Invalid parameter group {g}: {key}={group[key]!r} gives {len(value)} "
                        f"value(s) for {self.num_aux} auxiliary losses"
                    )
                values[key] = value
            out.append(values)
        return out

    def _blocks(
        self, index: list[int]
    ) -> tuple[dict[str, Any], list[int] | None, str | None, list[int]]:
        """``(hyper, coef_blocks, gram_blocks, active)`` of a step over the parameters
        ``index``: per-group hyperparameters as coefficient blocks (numbered over the groups
        present), the granularity of the inner products, and the positions in ``index`` that
        take part (a group whose own ``lam`` is 0 sits out)."""
        groups = self._check_groups()
        of = [self._group_of[i] for i in index]
        active = [
            pos
            for pos, g in enumerate(of)
            if "lam" not in self.param_groups[g] or any(groups[g]["lam"])
        ]
        k = self.num_aux
        self._step_groups = [0]

        def form(values: tuple[float, ...]) -> Any:
            return values[0] if k == 1 else list(values)

        per_group = any(("lam" in g or "rho" in g) for g in self.param_groups)
        if not per_group and self.granularity == "global":
            return {name: form(v) for name, v in self._levels().items()}, None, None, active
        present = sorted({of[pos] for pos in active})
        self._step_groups = present
        number = {g: n for n, g in enumerate(present)}
        hyper = {name: [form(groups[g][name]) for g in present] for name in self._levels()}
        gram = None if self.granularity == "global" else self.granularity
        return hyper, [number[of[pos]] for pos in active], gram, active

    @property
    def num_aux(self) -> int:
        """K, the number of auxiliary losses (one weight each)."""
        return len(self._lams)

    @property
    def lam(self) -> Any:
        """The aux weights ``lam >= 0``: a float (one aux loss) or a tuple of K; may be changed."""
        return self._lams[0] if self._lam_is_float else self._lams

    @lam.setter
    def lam(self, value: float | Sequence[float]) -> None:
        self._lams = self._check_lam(value)

    @property
    def lams(self) -> tuple[float, ...]:
        """The K aux weights as a tuple, whatever form ``lam`` was given in."""
        return self._lams

    @property
    def params(self) -> list[Tensor]:
        """The parameters, flattened over groups, in the order the state dict indexes them."""
        return list(self._params)

    def hyperparameters(self) -> dict[str, Any]:
        """The method's hyperparameters (saved in and restored from the state dict)."""
        return {"lam": self._lams[0] if self._lam_is_float else list(self._lams)}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        self.lam = hp["lam"]

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({len(self._params)} tensors, {hp})"

    # ------------------------------------------------------------------ the pipeline
    def backward(
        self,
        main: Tensor,
        aux: Tensor | Sequence[Tensor],
        *,
        accumulate: bool = False,
        scaler: Any = None,
        aux_replicated: bool = False,
        allow_unused: bool = False,
    ) -> None:
        """Compute every loss's gradient and leave the combined direction in each ``.grad``.

        The losses may share one forward graph or come from separate forward passes. A
        parameter that only some losses reach counts as a zero gradient for the others; one
        that no loss reaches takes no part in the step (its ``.grad`` and state are left as
        they are). ``.grad`` is *replaced* by the direction (not added to), keeping its memory
        format. Gradients are captured with ``Tensor.backward`` (``.grad`` set aside and
        restored), so reentrant activation checkpointing gives exact gradients.

        Gradient accumulation: call ``backward(..., accumulate=True)`` for every micro-batch
        but the last and ``backward(...)`` for the last one, with each loss divided by the
        number of micro-batches as usual. The surgeon sums the raw gradients and combines the
        totals once, so the direction and the state equal those of one call on the whole batch.
        ``.grad`` is left untouched until the last call.

        Mixed precision: with a ``torch.amp.GradScaler`` pass the UNSCALED losses and
        ``scaler=scaler``, then call ``scaler.step(opt)`` and ``scaler.update()`` as usual;
        ``.grad`` holds the scaled direction, the state sees unscaled gradients, and an overflow
        step changes no state and is skipped by the scaler (see :mod:`torchbloop.amp`).

        Data parallelism: with an initialised process group the gradients of all losses are
        averaged over the ranks in one collective before they are combined (see
        ``process_group``).

        Capture (``capture``, Bloop and Mixed): with ``capture="lean"`` (or ``"auto"``, where
        it applies) the surgery runs inside ``.grad`` between ordinary backward passes (plain
        training's memory plus the method's state, see ``torchbloop/surgeons/_lean.py``);
        the separate capture described above (the default) runs with ``accumulate``, a
        ``scaler``, data-parallel averaging or sharded parameters, and for the other methods.

        Args:
            main: the main loss (a scalar tensor that requires grad).
            aux: the auxiliary loss, or a list of K of them in priority order (one per lam).
            accumulate: only accumulate this micro-batch's gradients.
            scaler: a ``torch.amp.GradScaler`` (or ``None``).
            aux_replicated: the auxiliary losses are the same on every rank (they depend on
                the parameters only, e.g. weight decay), so their gradients are not communicated.
            allow_unused: accept a loss that reaches none of the parameters (its gradient is
                zero) as long as another loss reaches some.

        Raises:
            TypeError, ValueError: a loss is not a scalar tensor requiring grad, a loss reaches
                none of the parameters, or a gradient is sparse.
            NonFiniteGradientError: a loss, gradient or the direction is inf/NaN and
                ``nonfinite="raise"`` (never with a scaler).
        """
        losses = stages.check_losses(main, aux, self.num_aux)
        sharded = self._sharded()
        scale = loss_scale(scaler, losses[0].device)
        lean = self._lean_plan(accumulate=accumulate, scale=scale, sharded=sharded)
        if lean:
            captured = self._lean_backward(losses, allow_unused=allow_unused)
            if captured is None:
                return
            grads = captured  # the first loss did not reach every parameter
        else:
            scaled = losses if scale is None else [loss * scale for loss in losses]
            grads = stages.capture(self._params, scaled, allow_unused=allow_unused)
            stages.unscale(grads, scale)
        grads = self._accumulator.add(grads)
        if accumulate:
            self._accumulator.hold(grads)
            return
        had_pending = self._accumulator.clear()
        group = None if sharded else data_parallel_group(self.process_group)
        grads = stages.all_reduce(
            grads, self._params, group, replicated=[False] + [aux_replicated] * self.num_aux
        )
        checked = losses if group is None else None  # losses differ between ranks
        try:
            directions = self._surgery(grads, checked, skip_nonfinite=scale is not None, owned=True)
        except NonFiniteGradientError as error:
            if had_pending:  # the micro-batches summed so far cannot be told apart any more
                raise NonFiniteGradientError(
                    f"{error} The pending micro-batches were discarded."
                ) from None
            raise
        if directions is None:
            if scale is not None:
                poison_(self._params, [_first(g[i] for g in grads) for i in range(len(grads[0]))])
            return
        stages.write_grad(self._params, directions, scale)

    @property
    def pending_micro_batches(self) -> bool:
        """True between an ``accumulate=True`` call and the final ``backward``."""
        return self._accumulator.pending is not None

    # ------------------------------------------------------------------ lean capture
    def _lean_plan(self, *, accumulate: bool, scale: Tensor | None, sharded: bool) -> bool:
        """Whether this ``backward`` call runs lean (see ``capture``).

        Raises:
            ValueError: ``capture="lean"`` and the call cannot run lean (nothing changed).
        """
        if self.capture == "separate":
            return False
        reason = self._lean_obstacle(accumulate=accumulate, scale=scale, sharded=sharded)
        if reason is None and self.capture == "auto":
            reason = self._lean_auto_obstacle()
        if reason is None:
            return True
        if self.capture == "lean":
            raise ValueError(
                f"Invalid call with capture='lean': {reason}; lean capture cannot run it "
                "(capture='auto' runs the separate capture there)"
            )
        return False

    def _lean_obstacle(
        self, *, accumulate: bool, scale: Tensor | None, sharded: bool
    ) -> str | None:
        """Why this call cannot run lean (``None``: it can)."""
        if not self._lean_capture:
            return f"{type(self).__name__} has no lean capture"
        if accumulate or self.pending_micro_batches:
            return "gradient accumulation holds each loss's gradients between calls"
        if scale is not None:
            return "a GradScaler's overflow steps must leave the state untouched"
        if sharded:
            return "sharded (FSDP2/DTensor) parameters"
        if data_parallel_group(self.process_group) is not None:
            return "data-parallel averaging of each loss's gradients"
        groups = self._check_groups()
        if any("lam" in g and not any(v["lam"]) for g, v in zip(self.param_groups, groups)):
            return "a parameter group with lam = 0 sits out of the surgery"
        return None

    def _lean_auto_obstacle(self) -> str | None:
        """What makes ``capture="auto"`` prefer the separate capture although lean could run."""
        return None

    def _lean_backward(
        self, losses: list[Tensor], *, allow_unused: bool
    ) -> list[GradList] | None:  # pragma: no cover - only surgeons with _lean_capture call it
        """The lean step; ``None`` when done, else the gradients captured separately."""
        raise NotImplementedError

    def combine(
        self,
        main_grads: GradList,
        aux_grads: GradList | Sequence[GradList],
        *,
        out: Sequence[Tensor | None] | None = None,
    ) -> GradList:
        """The direction for gradients the caller already has; advances the state like ``backward``.

        Args:
            main_grads: one entry per parameter (``None`` meaning zero), dense, of the
                parameter's shape, dtype and device.
            aux_grads: likewise for the auxiliary loss; with K auxiliary losses a list of K
                such lists, in priority order.
            out: where to write the direction, one tensor per parameter like the gradients
                (e.g. each ``p.grad``); saves allocating new tensors, which on the CPU costs
                more than the step itself at large sizes. Default: new tensors.

        Returns:
            One direction per parameter (the tensors of ``out``, or new ones; the inputs are
            neither modified nor copied, and gradients that require grad are detached),
            ``None`` where every gradient is ``None``. ``None`` everywhere when the step was
            skipped (``nonfinite="skip"``; ``out`` is then left as it was).
        """
        nested = (
            isinstance(aux_grads, Sequence)
            and len(aux_grads) > 0
            and not isinstance(aux_grads[0], Tensor)
            and aux_grads[0] is not None
            and isinstance(aux_grads[0], Sequence)
        )
        aux_lists = list(aux_grads) if nested else [aux_grads]
        if len(aux_lists) != self.num_aux:
            raise ValueError(
                f"Invalid aux_grads: got {len(aux_lists)} gradient lists, the surgeon was built "
                f"for {self.num_aux} auxiliary losses"
            )
        names = stages.loss_names(self.num_aux)
        grads = [
            check_grad_list(f"{name}_grads", g, self._params)
            for name, g in zip(names, [main_grads, *aux_lists])
        ]
        if self.pending_micro_batches:
            raise RuntimeError(
                "combine() called while micro-batches are pending; finish with backward()"
            )
        sharded = self._sharded()
        targets = None if out is None else check_grad_list("out", out, self._params)
        # Detached (a graph must not reach the state); strided views made dense so that the
        # step takes the same (fused) path, and so the same rounding, as for plain tensors.
        grads = [[None if g is None else _plain_tensor(g.detach()) for g in gs] for gs in grads]
        reuse = targets is None and not sharded
        if reuse:  # the last call's buffers when the caller has let go of them (see _reuse)
            targets = self._direction_buffers.get(
                [
                    next((g[i] for g in grads if g[i] is not None), None)
                    for i in range(len(grads[0]))
                ]
            )
        result = self._surgery(grads, None, owned=False, out=targets)
        if result is None:
            return [None] * len(self._params)
        return self._direction_buffers.hand_out(result) if reuse else result

    def _sharded(self) -> bool:
        sharded = is_sharded(self._params)
        if sharded and not self._supports_sharding:
            raise NotImplementedError(
                f"{type(self).__name__} does not support sharded (DTensor/FSDP2) parameters "
                "(set _supports_sharding = True once it does)"
            )
        return sharded

    def _surgery(
        self,
        grads: list[GradList],
        losses: Sequence[Tensor] | None,
        *,
        skip_nonfinite: bool = False,
        owned: bool,
        out: GradList | None = None,
    ) -> GradList | None:
        """Finiteness and the method's combination (interface B); ``None`` when skipped.

        One :class:`~torchbloop.functional.SurgeryStep`: pass 1 computes the Gram matrix the
        method needs and every gradient's squared norm; the finiteness check reads those norms,
        the losses and a bound on the outputs (one host synchronisation, see
        :func:`~._finite.check_step`); pass 2 writes the direction and the new state. With
        ``owned`` the gradients belong to the surgeon and the direction is written into the
        main gradient list (the same rounding as new tensors); otherwise they are only read
        and the direction goes into new tensors. Sharded (DTensor) gradients are combined on their local shards (the Gram summed
        over the mesh); the directions are DTensors again.
        """
        n = len(self._params)
        index = [i for i in range(n) if any(g[i] is not None for g in grads)]
        if not index:  # nothing reached any parameter (combine() with all None)
            self.step_count += 1
            return [None] * n
        lists = [[dense(g[i], self._params[i]) for i in index] for g in grads]
        sharded = is_sharded(self._params)
        self._reduce = sharded_reducer(self._params) if sharded else None
        if sharded:
            lists = [[local(t) for t in ts] for ts in lists]
        hyper, coef_blocks, gram_blocks, active = self._blocks(index)
        excluded = [True] * len(index)
        for pos in active:
            excluded[pos] = False
        step_index = [index[pos] for pos in active]
        step_lists = (
            lists if len(active) == len(index) else [[ts[p] for p in active] for ts in lists]
        )
        sitting_out = [lists[0][p] for p, out_ in enumerate(excluded) if out_]
        targets: list[Tensor] | None = None
        if out is not None:
            chosen = [out[i] for i in index]
            if any(t is None for t in chosen):
                raise ValueError("Invalid out: None where a gradient exists; pass a tensor there")
            targets = [local(t) for t in chosen if t is not None]
        step_out = None if targets is None else [targets[p] for p in active]
        with autocast_disabled(self._params):
            state, fresh = self._step_state(step_lists, step_index)
            step = (
                SurgeryStep(
                    self._formula(),
                    step_lists,
                    state,
                    hyper=hyper,
                    out=step_lists[0] if owned else step_out,
                    coef_blocks=coef_blocks,
                    gram_blocks=gram_blocks,
                    reduce=self._reduce,
                    foreach=self.foreach,
                    kernel=self.foreach,
                )
                if active
                else None
            )
            finite = check_step(
                step,
                lists,
                losses,
                stages.loss_names(self.num_aux),
                raise_error=not (skip_nonfinite or self.nonfinite == "skip"),
                reduce=self._reduce,
                sitting_out=sitting_out,
            )
            if not finite:
                self.skipped_steps += 1
                self._on_skipped_step()
                return None
            if step is not None:
                result = step.apply()
                self._commit_state(fresh)
                self._after_step(step, result)
        # parameters that sit out take their main gradient (a copy when it is not ours)
        directions: list[Tensor] = list(lists[0])
        for pos, out_ in enumerate(excluded):
            if out_ and not owned:
                directions[pos] = (
                    directions[pos].clone()
                    if targets is None
                    else targets[pos].copy_(directions[pos])
                )
        if step is not None:
            for pos, d in zip(active, result.direction):
                directions[pos] = d
        if sharded:
            directions = [as_sharded_like(d, self._params[i]) for i, d in zip(index, directions)]
        self.step_count += 1
        full: GradList = [None] * n
        for i, d in zip(index, directions):
            full[i] = d
        return full

    # ------------------------------------------------------------------ the method
    @abstractmethod
    def _formula(self) -> Formula:
        """The method's :class:`~torchbloop.functional.Formula` (interface B)."""

    def _step_state(
        self, grads: list[list[Tensor]], index: list[int]
    ) -> tuple[list[list[Tensor]], list[list[Tensor]] | None]:
        """The state lists of this step (local shards at ``index``), and new buffers to keep
        if the step succeeds (``None`` when the existing ones are used)."""
        del grads, index
        return [], None

    def _commit_state(self, fresh: list[list[Tensor]] | None) -> None:
        """Keep the buffers :meth:`_step_state` created, once the step has happened."""
        if fresh is not None:
            self._set_state_lists(fresh)

    def _after_step(self, step: SurgeryStep, result: StepResult) -> None:  # noqa: B027
        """Hook after a step (e.g. diagnostics from the Gram and the formula's info)."""

    def _on_skipped_step(self) -> None:  # noqa: B027
        """Hook for a step skipped as non-finite (e.g. to mark diagnostics)."""

    # ------------------------------------------------------------------ state
    def state_spec(self) -> StateSpec:
        """The method's per-parameter state buffers (none by default)."""
        return StateSpec()

    def _state_lists(self) -> list[list[Tensor]] | None:
        """The state buffers, one list per key of :meth:`state_spec` (``None``: not created yet)."""
        return None

    def _set_state_lists(self, lists: list[list[Tensor]] | None) -> None:
        """Install buffers already validated by :meth:`StateSpec.from_dict`."""
        del lists  # stateless methods keep nothing

    def state_template(self) -> dict[int, dict[str, Tensor]]:
        """Zero state buffers shaped, typed and sharded as the surgeon would create them.

        What ``torch.distributed.checkpoint`` loads into (see
        :class:`torchbloop.distributed.checkpoint.SurgeonState`); empty for stateless methods.
        """
        spec = self.state_spec()
        return spec.to_dict(spec.zeros(self._params))

    def state_dict(self) -> dict[str, Any]:
        """The surgeon's state: plain tensors, numbers and strings (``weights_only`` loadable)."""
        if self.pending_micro_batches:
            raise RuntimeError(
                "state_dict() called while micro-batches are pending; call it after the final backward()"
            )
        index = 0
        groups = []
        for group in self.param_groups:
            n = len(group["params"])
            saved = {key: _plain(group[key]) for key in GROUP_KEYS if key in group}
            groups.append({"params": list(range(index, index + n)), **saved})
            index += n
        lists = self._state_lists()
        state = {} if lists is None else self.state_spec().to_dict(lists)
        return {
            METHOD: type(self).__name__,
            STEP: self.step_count,
            SKIPPED: self.skipped_steps,
            HYPERPARAMETERS: self.hyperparameters(),
            PARAM_GROUPS: groups,
            STATE: {i: {k: v.clone() for k, v in s.items()} for i, s in state.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict`; validates everything before changing anything.

        Raises:
            TypeError, ValueError: the state dict does not fit this surgeon (nothing changed).
            RuntimeError: micro-batches are pending.
        """
        if self.pending_micro_batches:
            raise RuntimeError(
                "load_state_dict() called while micro-batches are pending; finish the step with "
                "backward() first"
            )
        if not isinstance(state_dict, dict):
            raise TypeError(f"Invalid state_dict: expected a dict, got {type(state_dict).__name__}")
        missing = {METHOD, STEP, HYPERPARAMETERS, PARAM_GROUPS, STATE} - set(state_dict)
        if missing:
            raise ValueError(f"Invalid state_dict: missing keys {sorted(missing)}")
        if state_dict[METHOD] != type(self).__name__:
            raise ValueError(
                f"Invalid state_dict: it was saved by {state_dict[METHOD]}, not {type(self).__name__}"
            )
        groups = state_dict[PARAM_GROUPS]
        if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
        ):
            raise ValueError("Invalid state_dict: param_groups must be a list of {'params': [...]}")
        sizes = [len(g["params"]) for g in groups]
        if sizes != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(
                f"Invalid state_dict: parameter groups of sizes {sizes} do not fit this surgeon's "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        counts = {
            name: check_count(name, state_dict.get(name, 0 if name == SKIPPED else None))
            for name in SCALARS
        }
        hp = state_dict[HYPERPARAMETERS]
        lacking = sorted(set(self.hyperparameters()) - set(hp)) if isinstance(hp, dict) else None
        if lacking != []:
            raise ValueError(
                f"Invalid state_dict: hyperparameters {hp!r} lack {lacking}; "
                f"expected the keys {sorted(self.hyperparameters())}"
            )
        probe = type(self).__new__(type(self))
        probe.__dict__.update(self.__dict__)
        probe._set_hyperparameters(dict(hp))  # validates on a copy
        probe.param_groups = [
            {
                **{k: v for k, v in mine.items() if k not in GROUP_KEYS},
                **{k: saved[k] for k in GROUP_KEYS if k in saved},
            }
            for mine, saved in zip(self.param_groups, groups)
        ]
        probe._check_groups()  # validates the groups' own settings
        lists = self.state_spec().from_dict(state_dict[STATE], self._params)  # validates
        self.__dict__.update(probe.__dict__)
        self.step_count = counts[STEP]
        self.skipped_steps = counts[SKIPPED]
        self._set_state_lists(lists)


def surgeon_for(formula: Formula, name: str, *, max_aux: int | None = 1) -> type[Surgeon]:
    """The surgeon class of a stateless formula: ``cls(params, *, lam, foreach, nonfinite,
    process_group)``, with every part of :class:`Surgeon` (backward, accumulation, scaler,
    DDP/FSDP2, checkpoints); its state dicts are saved under ``name``.

    Example:
        >>> import torch
        >>> from torchbloop.functional import MixedFormula
        >>> Plain = surgeon_for(MixedFormula(), "PlainSum")
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> Plain([w], lam=0.5).backward(main=w.sum(), aux=w.pow(2).sum() / 2)
        >>> w.grad, Plain.__name__
        (tensor([1.5000, 2.0000]), 'PlainSum')
    """

    def _formula(self: Surgeon) -> Formula:
        del self
        return formula

    return type(
        name,
        (Surgeon,),
        {
            "_formula": _formula,
            "max_aux": max_aux,
            "__doc__": f"The surgeon of the formula {formula.name!r} (see :func:`surgeon_for`).",
            "__module__": __name__,
        },
    )


def _plain_tensor(g: Tensor) -> Tensor:
    """``g``, or a contiguous copy when it is a strided view (never for dense layouts such as
    channels_last, which keep their format)."""
    if g.is_contiguous():
        return g
    if g.dim() == 4 and g.is_contiguous(memory_format=torch.channels_last):
        return g
    if g.dim() == 5 and g.is_contiguous(memory_format=torch.channels_last_3d):
        return g
    return g.contiguous()


def _plain(value: Any) -> Any:
    """A group setting as plain numbers (a float, or a list of floats)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [float(v) for v in value]
    return float(value)


def _first(values: Any) -> Tensor | None:
    for v in values:
        if v is not None:
            return v  # type: ignore[no-any-return]
    return None


__all__ = ["NonFinite", "Surgeon", "check_process_group", "surgeon_for"]
