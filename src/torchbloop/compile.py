"""``torch.compile``: Bloop's combination step as one capturable function.

The functional core has no host synchronisation and no data-dependent Python branch (the
projection's degenerate case is a ``torch.where``), so TorchDynamo captures the direction and the
EMA update as ONE graph (``fullgraph=True`` holds; tested). :func:`bloop_step_` is that step,
written only in terms of :func:`~torchbloop.functional.bloop_direction` and
:func:`~torchbloop.functional.ema_update_` (no second copy of the formulas), and
:func:`compiled_bloop_step` returns it compiled, for a training step that is compiled as a
whole or to let Inductor fuse the passes over the gradients.

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

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from .functional import BloopDirection, Reducer, TensorList, bloop_direction, ema_update_

__all__ = ["bloop_step_", "compiled_bloop_step"]

EmaOrder = Literal["paper", "code"]


def bloop_step_(
    main_grads: TensorList,
    aux_grads: TensorList,
    ema: list[Tensor],
    *,
    lam: float,
    rho: float,
    ema_order: EmaOrder = "paper",
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> BloopDirection:
    """One Bloop step on gradient lists: the direction, and the EMA updated in place.

    ``ema_order="paper"``: ``d = g_main + lam * pi(g_aux; e)``, then ``e <- (1 - rho) e + rho g_main``;
    ``"code"``: the EMA update first, then the projection on the new EMA. This is what
    :class:`torchbloop.Bloop` does per step once it has the gradients.

    Args:
        main_grads: ``g_main``.
        aux_grads: ``g_aux``.
        ema: ``e``, updated in place (must not alias the gradients).
        lam: ``lam >= 0``.
        rho: ``rho`` in (0, 1], the EMA's weight of the new gradient.
        ema_order: ``"paper"`` or ``"code"``.
        out: where to write the direction (e.g. ``aux_grads``); default new tensors.
        foreach: use the multi-tensor kernels.
        reduce: sums the stacked local inner products over the shards (FSDP2).

    Returns:
        :class:`~torchbloop.functional.BloopDirection` ``(direction, coef, skipped)``.
    """
    if ema_order == "code":
        ema_update_(ema, main_grads, rho=rho, foreach=foreach)
    result = bloop_direction(
        main_grads, aux_grads, ema, lam=lam, out=out, foreach=foreach, reduce=reduce
    )
    if ema_order == "paper":
        ema_update_(ema, main_grads, rho=rho, foreach=foreach)
    return result


def compiled_bloop_step(
    *,
    backend: str | Callable[..., Any] = "inductor",
    mode: str | None = None,
    dynamic: bool | None = None,
) -> Callable[..., BloopDirection]:
    """:func:`bloop_step_` compiled with ``fullgraph=True`` (a graph break would be an error).

    Compilation happens on the first call and again when the number, shapes or dtypes of the
    tensors change. ``lam`` and ``rho`` may change between calls.

    Args:
        backend: the ``torch.compile`` backend (``"inductor"`` fuses the passes; ``"aot_eager"``
            only traces, handy in tests).
        mode: the ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``).
        dynamic: the ``torch.compile`` ``dynamic`` flag.

    Returns:
        A function with the signature of :func:`bloop_step_`.
    """
    compiled: Callable[..., BloopDirection] = torch.compile(
        bloop_step_, fullgraph=True, backend=backend, mode=mode, dynamic=dynamic
    )
    return compiled
