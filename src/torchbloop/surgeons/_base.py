"""The surgeon base class: gradients in, one direction out, written to ``.grad``.

A surgeon owns a list of parameters and the method's state. ``backward`` computes the main and
auxiliary gradients, ``combine`` turns them into one direction (advancing the state), and the
direction lands in ``.grad`` for any ``torch.optim`` optimizer to apply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from torch import Tensor

from .._validation import (
    NonFiniteGradientError,
    ParamsT,
    check_choice,
    check_grad_list,
    check_lam,
    check_loss,
    collect_params,
)
from ..amp import autocast_disabled, loss_scale, poison_, rescale_, unscale_
from ..distributed.data_parallel import ProcessGroupArg, average_gradients_, data_parallel_group
from ..distributed.sharded import (
    ShardedReducer,
    as_sharded_like,
    gradients_through_backward,
    is_sharded,
    local,
    sharded_reducer,
)
from ._finite import all_finite
from ._gradients import GradList, accumulate_, autograd_gradients, dense

NonFinite = Literal["raise", "skip"]

STATE = "state"
STEP = "step"
HYPERPARAMETERS = "hyperparameters"
PARAM_GROUPS = "param_groups"
METHOD = "method"


class Surgeon(ABC):
    """Base class of all surgeons (``Bloop``, ``Mixed``, ``PCGrad``, ``DynamicBarrier``).

    Subclasses compute the direction from aligned lists of dense main and auxiliary gradients
    (:meth:`_direction`); this class handles parameters, gradient computation, gradient
    accumulation, missing gradients, finiteness checks, ``.grad`` and the state dict.

    Distributed training: with ``process_group="auto"`` (the default) and an initialised process
    group of several ranks, :meth:`backward` averages the gradients over the ranks itself (one
    collective; see :mod:`torchbloop.distributed.data_parallel`), so a model wrapped in
    ``DistributedDataParallel`` trains as in one process. Pass ``process_group=None`` when the
    ranks must not be averaged (e.g. independent runs), or a group to average over that group.
    Sharded (FSDP2/DTensor) parameters are detected and handled by subclasses that set
    ``_supports_sharding`` (see :mod:`torchbloop.distributed.sharded`).
    """

    _supports_sharding: ClassVar[bool] = False
    """Whether :meth:`_direction` passes ``self._reduce`` to every inner product it computes."""

    def __init__(
        self,
        params: ParamsT,
        *,
        lam: float,
        foreach: bool = True,
        nonfinite: NonFinite = "raise",
        process_group: ProcessGroupArg = "auto",
    ) -> None:
        self.param_groups, self._params = collect_params(params)
        self._lam = check_lam(lam)
        if not isinstance(foreach, bool):
            raise TypeError(f"Invalid foreach={foreach!r}: must be a bool")
        self.foreach = foreach
        self.nonfinite: NonFinite = check_choice("nonfinite", nonfinite, ("raise", "skip"))  # type: ignore[assignment]
        self.step_count = 0
        self.skipped_steps = 0
        self._acc_main: GradList | None = None
        self._acc_aux: GradList | None = None
        data_parallel_group(process_group if isinstance(process_group, str) else None)  # validates
        self.process_group: ProcessGroupArg = process_group
        self._reduce: ShardedReducer | None = None

    # ------------------------------------------------------------------ hyperparameters
    @property
    def lam(self) -> float:
        """``lam >= 0``, the weight of the (processed) auxiliary gradient; may be changed."""
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        self._lam = check_lam(value)

    @property
    def params(self) -> list[Tensor]:
        """The parameters, flattened over groups, in the order the state dict indexes them."""
        return list(self._params)

    def hyperparameters(self) -> dict[str, Any]:
        """The method's hyperparameters (saved in and restored from the state dict)."""
        return {"lam": self._lam}

    def _set_hyperparameters(self, hp: dict[str, Any]) -> None:
        self.lam = hp["lam"]

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({len(self._params)} tensors, {hp})"

    # ------------------------------------------------------------------ gradients
    def _compute_gradients(self, main: Tensor, aux: Tensor) -> tuple[GradList, GradList]:
        """``(d main / d params, d aux / d params)``, ``None`` where a loss does not reach."""
        return autograd_gradients(self._params, main, aux)

    def _compute_gradients_with_backward(
        self, main: Tensor, aux: Tensor
    ) -> tuple[GradList, GradList]:
        """Both gradients through ``Tensor.backward`` (FSDP2 reduce-scatters in its hooks)."""
        return gradients_through_backward(self._params, main, aux)

    def backward(
        self,
        main: Tensor,
        aux: Tensor,
        *,
        accumulate: bool = False,
        scaler: Any = None,
        aux_replicated: bool = False,
    ) -> None:
        """Compute both gradients and leave the combined direction in each ``.grad``.

        The two losses may share one forward graph or come from two forward passes. A parameter
        that only one loss reaches counts as a zero gradient for the other; one that neither
        reaches takes no part in the step (its ``.grad`` and state are left as they are).
        ``.grad`` is *replaced* by the direction (not added to).

        Gradient accumulation: call ``backward(..., accumulate=True)`` for every micro-batch
        but the last and ``backward(...)`` for the last one, with each loss divided by the
        number of micro-batches as usual. The surgeon sums the raw gradients and combines the
        totals once, so the direction and the state equal those of one call on the whole batch.
        ``.grad`` is left untouched until the last call.

        Mixed precision: with a ``torch.amp.GradScaler`` pass the UNSCALED losses and
        ``scaler=scaler``, then call ``scaler.step(opt)`` and ``scaler.update()`` as usual;
        ``.grad`` holds the scaled direction, the state sees unscaled gradients, and an overflow
        step changes no state and is skipped by the scaler (see :mod:`torchbloop.amp`).

        Data parallelism: with an initialised process group the gradients are averaged over
        the ranks in one collective before they are combined (see ``process_group``).

        Args:
            main: the main loss (a scalar tensor that requires grad).
            aux: the auxiliary loss (likewise).
            accumulate: only accumulate this micro-batch's gradients.
            scaler: a ``torch.amp.GradScaler`` (or ``None``).
            aux_replicated: the auxiliary loss is the same on every rank (it depends on the
                parameters only, e.g. weight decay), so its gradient is not communicated.

        Raises:
            TypeError, ValueError: a loss is not a scalar tensor requiring grad; a gradient is sparse.
            NonFiniteGradientError: a loss or gradient is inf/NaN and ``nonfinite="raise"``
                (never with a scaler).
        """
        check_loss("main", main)
        check_loss("aux", aux)
        scale = loss_scale(scaler, main.device)
        sharded = is_sharded(self._params)
        if sharded and not self._supports_sharding:
            raise NotImplementedError(
                f"{type(self).__name__} does not support sharded (DTensor/FSDP2) parameters (its _direction must pass reduce=self._reduce to every inner product and set _supports_sharding = True)"
            )
        losses = (main, aux) if scale is None else (main * scale, aux * scale)
        if sharded:
            g_main, g_aux = self._compute_gradients_with_backward(*losses)
        else:
            g_main, g_aux = self._compute_gradients(*losses)
        check_grad_list("main gradient", g_main, self._params)
        check_grad_list("aux gradient", g_aux, self._params)
        if scale is not None:
            unscale_(g_main, scale)
            unscale_(g_aux, scale)
        if self._acc_main is not None and self._acc_aux is not None:
            g_main = accumulate_(self._acc_main, g_main)
            g_aux = accumulate_(self._acc_aux, g_aux)
        if accumulate:
            self._acc_main, self._acc_aux = g_main, g_aux
            return
        had_pending = self._acc_main is not None
        self._acc_main = self._acc_aux = None
        group = None if sharded else data_parallel_group(self.process_group)
        checked: tuple[Tensor, Tensor] | None = (main, aux)
        if group is not None:
            averaged = average_gradients_(
                [g_main] if aux_replicated else [g_main, g_aux], self._params, group
            )
            g_main, g_aux = averaged[0], g_aux if aux_replicated else averaged[1]
            checked = None  # losses differ between ranks; the averaged gradients do not
        skipped = self.skipped_steps
        try:
            with autocast_disabled(self._params):
                directions = self._combine_owned(
                    g_main, g_aux, losses=checked, skip_nonfinite=scale is not None
                )
        except NonFiniteGradientError as error:
            if had_pending:  # the micro-batches summed so far cannot be told apart any more
                raise NonFiniteGradientError(
                    f"{error} The pending micro-batches were discarded."
                ) from None
            raise
        if scale is not None and self.skipped_steps != skipped:
            poison_(self._params, [a if a is not None else b for a, b in zip(g_main, g_aux)])
            return
        if scale is not None:
            rescale_(directions, scale)
        for p, d in zip(self._params, directions):
            if d is None:
                continue
            if p.grad is None:
                p.grad = d
            else:
                p.grad.copy_(d)

    @property
    def pending_micro_batches(self) -> bool:
        """True between an ``accumulate=True`` call and the final ``backward``."""
        return self._acc_main is not None

    def combine(self, main_grads: GradList, aux_grads: GradList) -> GradList:
        """The direction for gradients the caller already has; advances the state like ``backward``.

        Args:
            main_grads: one entry per parameter (``None`` meaning zero), dense, of the
                parameter's shape, dtype and device.
            aux_grads: likewise for the auxiliary loss.

        Returns:
            One direction per parameter (new tensors; the inputs are not modified), ``None``
            where both gradients are ``None``.
        """
        main_list = check_grad_list("main_grads", main_grads, self._params)
        aux_list = check_grad_list("aux_grads", aux_grads, self._params)
        if self.pending_micro_batches:
            raise RuntimeError(
                "combine() called while micro-batches are pending; finish with backward()"
            )
        main_copy: GradList = [None if g is None else g.clone() for g in main_list]
        aux_copy: GradList = [None if g is None else g.clone() for g in aux_list]
        return self._combine_owned(main_copy, aux_copy, losses=None)

    def _combine_owned(
        self,
        g_main: GradList,
        g_aux: GradList,
        losses: tuple[Tensor, Tensor] | None,
        skip_nonfinite: bool = False,
    ) -> GradList:
        """Combine gradients the surgeon owns (it may overwrite them).

        Sharded (DTensor) gradients are combined on their local shards, with ``self._reduce``
        summing inner products over the mesh; the directions are DTensors again.
        """
        index = [
            i for i, (gm, ga) in enumerate(zip(g_main, g_aux)) if gm is not None or ga is not None
        ]
        main = [dense(g_main[i], self._params[i]) for i in index]
        aux = [dense(g_aux[i], self._params[i]) for i in index]
        sharded = is_sharded(self._params)
        if sharded and not self._supports_sharding:
            raise NotImplementedError(
                f"{type(self).__name__} does not support sharded (DTensor/FSDP2) parameters (its _direction must pass reduce=self._reduce to every inner product and set _supports_sharding = True)"
            )
        self._reduce = sharded_reducer(self._params) if sharded else None
        if sharded:
            main, aux = [local(g) for g in main], [local(g) for g in aux]
        if not self._all_finite(main, aux, losses, skip=skip_nonfinite):
            self.skipped_steps += 1
            return [None] * len(self._params)
        directions = self._direction(main, aux, index) if index else []
        if sharded:
            directions = [as_sharded_like(d, self._params[i]) for i, d in zip(index, directions)]
        self.step_count += 1
        out: GradList = [None] * len(self._params)
        for i, d in zip(index, directions):
            out[i] = d
        return out

    def _all_finite(
        self,
        main: list[Tensor],
        aux: list[Tensor],
        losses: tuple[Tensor, Tensor] | None,
        skip: bool = False,
    ) -> bool:
        """One host synchronisation: are the losses and all gradients finite? (see :func:`all_finite`)"""
        return all_finite(
            main,
            aux,
            losses,
            raise_error=not (skip or self.nonfinite == "skip"),
            reduce=self._reduce,
            device=local(self._params[0]).device,
        )

    @abstractmethod
    def _direction(self, main: list[Tensor], aux: list[Tensor], index: list[int]) -> list[Tensor]:
        """The direction for the parameters ``index`` (may overwrite ``main``/``aux``)."""

    # ------------------------------------------------------------------ state
    def _method_state(self) -> dict[int, dict[str, Tensor]]:
        """Per-parameter state tensors, keyed by parameter index (none by default)."""
        return {}

    def _load_method_state(self, state: dict[int, dict[str, Tensor]]) -> None:
        """Install per-parameter state already validated by :meth:`_check_method_state`."""
        del state  # stateless methods keep nothing

    def _check_method_state(
        self, state: dict[int, dict[str, Tensor]]
    ) -> dict[int, dict[str, Tensor]]:
        if state:
            raise ValueError(
                f"Invalid state_dict: {type(self).__name__} keeps no per-parameter state"
            )
        return {}

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
            groups.append({"params": list(range(index, index + n))})
            index += n
        return {
            METHOD: type(self).__name__,
            STEP: self.step_count,
            "skipped_steps": self.skipped_steps,
            HYPERPARAMETERS: self.hyperparameters(),
            PARAM_GROUPS: groups,
            STATE: {
                i: {k: v.clone() for k, v in s.items()} for i, s in self._method_state().items()
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state saved by :meth:`state_dict`; validates everything before changing anything."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"Invalid state_dict: expected a dict, got {type(state_dict).__name__}")
        missing = {METHOD, STEP, HYPERPARAMETERS, PARAM_GROUPS, STATE} - set(state_dict)
        if missing:
            raise ValueError(f"Invalid state_dict: missing keys {sorted(missing)}")
        if state_dict[METHOD] != type(self).__name__:
            raise ValueError(
                f"Invalid state_dict: it was saved by {state_dict[METHOD]}, not {type(self).__name__}"
            )
        sizes = [len(g["params"]) for g in state_dict[PARAM_GROUPS]]
        if sizes != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(
                f"Invalid state_dict: parameter groups of sizes {sizes} do not fit this surgeon's "
                f"{[len(g['params']) for g in self.param_groups]}"
            )
        probe = type(self).__new__(type(self))
        probe.__dict__.update(self.__dict__)
        hp = state_dict[HYPERPARAMETERS]
        lacking = sorted(set(self.hyperparameters()) - set(hp)) if isinstance(hp, dict) else None
        if lacking != []:
            raise ValueError(
                f"Invalid state_dict: hyperparameters {hp!r} lack {lacking}; "
                f"expected the keys {sorted(self.hyperparameters())}"
            )
        probe._set_hyperparameters(dict(hp))  # validates
        state = self._check_method_state(dict(state_dict[STATE]))
        self.__dict__.update(probe.__dict__)
        self.step_count = int(state_dict[STEP])
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self._load_method_state(state)
