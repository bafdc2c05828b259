"""``torch.compile``: Bloop's combination step as one capturable function.

The functional core has no host synchronisation and no data-dependent Python branch (the
projection's degenerate case is a ``torch.where``), so TorchDynamo captures the direction and the
EMA update as ONE graph (``fullgraph=True`` holds; tested). :func:`bloop_step_` is that step
(:func:`~torchbloop.functional.bloop_update_composed_`: no second copy of the formulas), and
:func:`compiled_bloop_step` returns it compiled, for a training step that is compiled as a
whole or to let Inductor fuse the passes over the gradients. On CPU float32/float64 gradients
the compiled step calls the fused C kernel of the eager path as the custom op
``torchbloop::bloop_update_cpu_`` (faster than Inductor's generated loops on CPU);
``cpu_kernel=False`` turns that off.

In a compiled training step, keep the surgeon's ``backward`` outside the compiled region (it
calls ``torch.autograd.grad`` and checks finiteness once on the host) and compile the model, or
compute the gradients yourself and call the compiled step; see ``docs/production.md``.

Example:
    >>> import torch
    >>> from torchbloop.compile import bloop_step_
    >>> main, aux = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
    >>> ema = [torch.tensor([2.0, 0.0])]
    >>> bloop_step_(main, aux, ema, lam=0.5, rho=0.5).direction
    [tensor([1.0000, 0.5000])]
    >>> ema
    [tensor([1.5000, 0.0000])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .functional import BloopDirection, Reducer, bloop_update_composed_, cpu_kernel_available
from .functional._fused import EmaOrder, _native_update, _same, _shares
from .functional._native import usable

_OP = "torchbloop::bloop_update_cpu_"

__all__ = ["bloop_step_", "compiled_bloop_step"]


bloop_step_ = bloop_update_composed_
"""One Bloop step on gradient lists (direction, EMA updated in place); see
:func:`torchbloop.functional.bloop_update_composed_`. This is what :class:`torchbloop.Bloop`
does per step once it has the gradients, in the form Dynamo captures as one graph."""


def _register_cpu_op() -> None:
    """Registers ``torchbloop::bloop_update_cpu_``: the fused C kernel as an opaque custom op.

    Inductor cannot look inside it; it calls it with the real tensors, so a compiled step on CPU
    runs the same two loops as the eager :func:`~torchbloop.functional.bloop_update_`. Inputs
    the kernel cannot take at run time (non-contiguous, for instance) go through the torch-op
    composition instead, inside the op. Registered once per process.
    """
    try:
        torch.ops.torchbloop.bloop_update_cpu_  # noqa: B018 - raises if not registered yet
        return
    except (AttributeError, RuntimeError):
        pass

    @torch.library.custom_op(_OP, mutates_args=("aux_grads", "ema"), device_types="cpu")
    def bloop_update_cpu_(
        main_grads: list[Tensor],
        aux_grads: list[Tensor],
        ema: list[Tensor],
        lam: float,
        rho: float,
        code_order: bool,
    ) -> tuple[Tensor, Tensor]:
        order: EmaOrder = "code" if code_order else "paper"
        if usable(main_grads, aux_grads, ema):
            return _native_update(main_grads, aux_grads, ema, lam, rho, order, None)
        result = bloop_update_composed_(
            main_grads, aux_grads, ema, lam=lam, rho=rho, ema_order=order, out=list(aux_grads)
        )
        return result.coef.clone(), result.skipped.clone()

    @bloop_update_cpu_.register_fake  # type: ignore[misc]
    def _(
        main_grads: list[Tensor],
        aux_grads: list[Tensor],
        ema: list[Tensor],
        lam: float,
        rho: float,
        code_order: bool,
    ) -> tuple[Tensor, Tensor]:
        return ema[0].new_empty(()), torch.empty((), dtype=torch.bool)


def _kernel_takes(
    main: Sequence[Tensor], aux: Sequence[Tensor], ema: Sequence[Tensor], out: Any, reduce: Any
) -> bool:
    """Trace-time test: CPU float32/float64 lists of one dtype, direction written over ``aux``."""
    if reduce is not None or out is None or not _same(out, aux) or _shares(ema, main, aux):
        return False
    if not ema or len(main) != len(ema) or len(aux) != len(ema):
        return False
    dtype = ema[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    return all(
        t.device.type == "cpu" and t.dtype == dtype for tensors in (main, aux, ema) for t in tensors
    )


def compiled_bloop_step(
    *,
    backend: str | Callable[..., Any] = "inductor",
    mode: str | None = None,
    dynamic: bool | None = None,
    foreach: bool = False,
    cpu_kernel: bool = True,
) -> Callable[..., BloopDirection]:
    """:func:`bloop_step_` compiled with ``fullgraph=True`` (a graph break would be an error).

    Compilation happens on the first call and again when the number, shapes or dtypes of the
    tensors change. ``lam`` and ``rho`` may change between calls (they recompile).

    Args:
        backend: the ``torch.compile`` backend (``"inductor"`` fuses the passes; ``"aot_eager"``
            only traces, handy in tests).
        mode: the ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``).
        dynamic: the ``torch.compile`` ``dynamic`` flag.
        foreach: the default ``foreach`` of the traced step. Per-tensor ops (``False``) let
            Inductor fuse each tensor's work into one loop: on the CPU (20M float32 parameters in
            50 tensors, one thread) that ran at 3.4x an in-place ``foreach_add_`` against 5.5x
            for the traced multi-tensor ops. A call may still pass ``foreach=``.
        cpu_kernel: on CPU float32/float64 gradients (with ``out=`` the auxiliary gradients and
            no ``reduce``), call the fused C kernel as the custom op
            ``torchbloop::bloop_update_cpu_`` instead of letting Inductor generate the loops:
            2.4-2.9x ``foreach_add_`` against 3.4-4.0x for Inductor's code (20M parameters, one
            thread). Ignored when the kernel is unavailable (no C compiler).

    Returns:
        A function with the signature of :func:`bloop_step_`.
    """

    use_kernel = cpu_kernel and cpu_kernel_available()  # decided here, outside the trace
    if use_kernel:
        _register_cpu_op()

    def step(
        main_grads: list[Tensor],
        aux_grads: list[Tensor],
        ema: list[Tensor],
        *,
        lam: float,
        rho: float,
        ema_order: EmaOrder = "paper",
        out: list[Tensor] | None = None,
        foreach: bool = foreach,
        reduce: Reducer | None = None,
    ) -> BloopDirection:
        if (
            use_kernel
            and out is not None
            and ema_order in ("paper", "code")
            and _kernel_takes(main_grads, aux_grads, ema, out, reduce)
        ):
            coef, skipped = torch.ops.torchbloop.bloop_update_cpu_(
                main_grads, aux_grads, ema, lam, rho, ema_order == "code"
            )
            return BloopDirection(out, coef, skipped)
        return bloop_step_(
            main_grads,
            aux_grads,
            ema,
            lam=lam,
            rho=rho,
            ema_order=ema_order,
            out=out,
            foreach=foreach,
            reduce=reduce,
        )

    compiled: Callable[..., BloopDirection] = torch.compile(
        step, fullgraph=True, backend=backend, mode=mode, dynamic=dynamic
    )
    return compiled
