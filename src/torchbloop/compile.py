"""``torch.compile``: Bloop's combination step as one capturable function.

:func:`bloop_step_` is the step in the form TorchDynamo captures as ONE graph
(:func:`~torchbloop.functional.bloop_update_composed_`: no host synchronisation, no
data-dependent Python branch). :func:`compiled_bloop_step` returns the step compiled with
``fullgraph=True`` for a training loop: it compiles once and then runs with fresh gradient lists
every step and any ``lam``/``rho`` schedule without recompiling. ``lam`` and ``rho`` enter the
graph as a float64 tensor ``[lam, rho]`` (never as guarded Python numbers) and the traced code makes no
identity test on the lists. On CPU float32/float64 gradients the compiled step calls the fused
C kernel (:func:`~torchbloop.functional._native.gram` and
:func:`~torchbloop.functional._native.lincomb`) as the custom op
``torchbloop::bloop_update_cpu_``; elsewhere (``cpu_kernel=False``, CUDA, other dtypes) the
graph holds the same two passes as torch ops for Inductor to fuse.

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
from typing import Any, Literal

import torch
from torch import Tensor

from .functional import (
    BloopDirection,
    Reducer,
    _native,
    bloop_update_composed_,
    cpu_kernel_available,
    global_dots,
    projection_coefficient,
)

EmaOrder = Literal["paper", "code"]
_OP = "torchbloop::bloop_update_cpu_"

__all__ = ["bloop_step_", "compiled_bloop_step"]


bloop_step_ = bloop_update_composed_
"""One Bloop step on gradient lists (direction, EMA updated in place); see
:func:`torchbloop.functional.bloop_update_composed_`. This is what :class:`torchbloop.Bloop`
does per step once it has the gradients, in the form Dynamo captures as one graph."""


def _kernel_step(
    main: list[Tensor], aux: list[Tensor], ema: list[Tensor], lam: float, rho: float, code: bool
) -> tuple[Tensor, Tensor]:
    """Bloop's step through the generic kernel; the direction overwrites ``aux``.

    "paper" order: pass 1 ``<aux, e>``, ``<e, e>``; pass 2 the direction and the new EMA. "code"
    order: the EMA is updated first (one more pass), then the same on the new EMA.
    """
    if code:
        _native.lincomb([ema, main], [ema], torch.tensor([[[1.0 - rho, rho]]], dtype=torch.float64))
    dots = _native.gram([aux, ema], [(0, 1), (1, 1)])[0]
    coef, skipped = projection_coefficient(dots[0], dots[1])
    rows = [[1.0, lam, -lam * float(coef)]]
    outputs = [aux]
    if not code:
        rows.append([rho, 0.0, 1.0 - rho])
        outputs.append(ema)
    _native.lincomb([main, aux, ema], outputs, torch.tensor([rows], dtype=torch.float64))
    return coef.to(ema[0].dtype), skipped


def _register_cpu_op() -> None:
    """Registers ``torchbloop::bloop_update_cpu_``: the fused C kernel as an opaque custom op.

    Inductor cannot look inside it; it calls it with the real tensors. ``hyper`` is
    ``[lam, rho]`` as a float64 tensor, so new values are new data, not a new graph. Inputs
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
        hyper: Tensor,
        code_order: bool,
    ) -> tuple[Tensor, Tensor]:
        lam, rho = hyper.tolist()
        if _native.usable([main_grads, aux_grads, ema]):
            return _kernel_step(main_grads, aux_grads, ema, lam, rho, code_order)
        order: EmaOrder = "code" if code_order else "paper"
        result = bloop_update_composed_(
            main_grads, aux_grads, ema, lam=lam, rho=rho, ema_order=order, out=list(aux_grads)
        )
        return result.coef.clone(), result.skipped.clone()

    @bloop_update_cpu_.register_fake  # type: ignore[misc]
    def _(
        main_grads: list[Tensor],
        aux_grads: list[Tensor],
        ema: list[Tensor],
        hyper: Tensor,
        code_order: bool,
    ) -> tuple[Tensor, Tensor]:
        return ema[0].new_empty(()), torch.empty((), dtype=torch.bool)


def _kernel_takes(
    main: Sequence[Tensor], aux: Sequence[Tensor], ema: Sequence[Tensor], out: Any, reduce: Any
) -> bool:
    """Trace-time test: CPU float32/float64 lists of one dtype, the direction written over
    ``aux``, the EMA separate. Tensor identity only (Dynamo resolves it without guards on the
    lists themselves)."""
    if reduce is not None or out is None or not ema:
        return False
    if len(main) != len(ema) or len(aux) != len(ema) or len(out) != len(aux):
        return False
    if not all(o is a for o, a in zip(out, aux)) or ema[0] is main[0] or ema[0] is aux[0]:
        return False
    dtype = ema[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    return all(
        t.device.type == "cpu" and t.dtype == dtype for tensors in (main, aux, ema) for t in tensors
    )


def _torch_step(
    main: list[Tensor],
    aux: list[Tensor],
    ema: list[Tensor],
    hyper: Tensor,
    code: bool,
    out: list[Tensor] | None,
    foreach: bool,
    reduce: Reducer | None,
) -> BloopDirection:
    """The same two passes as torch ops with 0-dim tensor coefficients (what Inductor fuses):
    the inner products, then the direction and the EMA update."""
    dtype = ema[0].dtype
    lam, rho = hyper[0].to(dtype), hyper[1].to(dtype)
    if code:
        _mix_(ema, main, rho, foreach)
    dots = global_dots([(aux, ema), (ema, ema)], reduce=reduce)
    coef, skipped = projection_coefficient(dots[0], dots[1])
    ncoef = (coef * -hyper[0]).to(dtype)
    direction: list[Tensor]
    if foreach:
        direction = list(torch._foreach_mul(aux, lam))
        torch._foreach_add_(direction, main)
        torch._foreach_add_(direction, torch._foreach_mul(ema, ncoef))
    else:
        direction = [m + lam * a + ncoef * e for m, a, e in zip(main, aux, ema)]
    if not code:
        _mix_(ema, main, rho, foreach)
    if out is not None:
        for o, d in zip(out, direction):
            o.copy_(d)
        direction = out
    return BloopDirection(direction, coef.to(dtype), skipped)


def _mix_(ema: list[Tensor], main: list[Tensor], rho: Tensor, foreach: bool) -> None:
    """``e <- e + rho (g - e)`` with a 0-dim tensor ``rho``."""
    if foreach:
        torch._foreach_add_(ema, torch._foreach_mul(torch._foreach_sub(main, ema), rho))
    else:
        for e, m in zip(ema, main):
            e.add_(rho * (m - e))


def compiled_bloop_step(
    *,
    backend: str | Callable[..., Any] = "inductor",
    mode: str | None = None,
    dynamic: bool | None = None,
    foreach: bool = False,
    cpu_kernel: bool = True,
) -> Callable[..., BloopDirection]:
    """Bloop's step compiled with ``fullgraph=True`` (a graph break would be an error).

    Compilation happens on the first call and again only when the number, shapes or dtypes of
    the tensors change (or ``ema_order``, ``out`` given or not, ``foreach``, ``reduce``): fresh
    gradient lists every step and any ``lam``/``rho`` schedule reuse the graph.

    Args:
        backend: the ``torch.compile`` backend (``"inductor"`` fuses the passes; ``"aot_eager"``
            only traces, handy in tests).
        mode: the ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``).
        dynamic: the ``torch.compile`` ``dynamic`` flag.
        foreach: the default ``foreach`` of the traced step. Per-tensor ops (``False``) let
            Inductor fuse each tensor's work into one loop. A call may still pass ``foreach=``.
        cpu_kernel: on CPU float32/float64 gradients (with ``out=`` the auxiliary gradients and
            no ``reduce``), call the fused C kernel as the custom op
            ``torchbloop::bloop_update_cpu_`` instead of letting Inductor generate the loops.
            Ignored when the kernel is unavailable (no C compiler).

    Returns:
        A function with the signature of :func:`bloop_step_`.

    Example:
        >>> import torch
        >>> from torchbloop.compile import compiled_bloop_step
        >>> step = compiled_bloop_step(backend="aot_eager")
        >>> main, aux, ema = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])], [torch.tensor([2.0, 0.0])]
        >>> step(main, aux, ema, lam=0.5, rho=0.5, out=aux).direction
        [tensor([1.0000, 0.5000])]
    """
    use_kernel = cpu_kernel and cpu_kernel_available()  # decided here, outside the trace
    if use_kernel:
        _register_cpu_op()

    def traced(
        main_grads: list[Tensor],
        aux_grads: list[Tensor],
        ema: list[Tensor],
        hyper: Tensor,
        code: bool,
        out: list[Tensor] | None,
        foreach: bool,
        reduce: Reducer | None,
    ) -> BloopDirection:
        # fresh list objects: the functional helpers below may look lists up by id(), which
        # Dynamo would otherwise guard on (a recompile for every new list of gradients)
        main_grads, aux_grads, ema = list(main_grads), list(aux_grads), list(ema)
        out = None if out is None else list(out)
        if use_kernel and _kernel_takes(main_grads, aux_grads, ema, out, reduce):
            assert out is not None
            coef, skipped = torch.ops.torchbloop.bloop_update_cpu_(
                main_grads, aux_grads, ema, hyper, code
            )
            return BloopDirection(out, coef, skipped)
        return _torch_step(main_grads, aux_grads, ema, hyper, code, out, foreach, reduce)

    compiled = torch.compile(traced, fullgraph=True, backend=backend, mode=mode, dynamic=dynamic)

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
        if ema_order not in ("paper", "code"):
            raise ValueError(f"Invalid ema_order={ema_order!r}: must be 'paper' or 'code'")
        hyper = torch.tensor([float(lam), float(rho)], dtype=torch.float64)
        if ema and ema[0].device.type != "cpu":
            hyper = hyper.to(ema[0].device, non_blocking=True)
        return compiled(  # type: ignore[no-any-return]
            main_grads, aux_grads, ema, hyper, ema_order == "code", out, foreach, reduce
        )

    step.compiled = compiled  # type: ignore[attr-defined]
    return step
