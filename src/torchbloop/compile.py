"""``torch.compile``: Bloop's combination step as one capturable function.

The functional core has no host synchronisation and no data-dependent Python branch (the
projection's degenerate case is a ``torch.where``), so TorchDynamo captures the direction and the
EMA update as ONE graph (``fullgraph=True`` holds; tested). :func:`bloop_step_` is that step
(:func:`~torchbloop.functional.bloop_update_composed_`: no second copy of the formulas), and
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
from typing import Any

import torch

from .functional import BloopDirection, bloop_update_composed_

__all__ = ["bloop_step_", "compiled_bloop_step"]


bloop_step_ = bloop_update_composed_
"""One Bloop step on gradient lists (direction, EMA updated in place); see
:func:`torchbloop.functional.bloop_update_composed_`. This is what :class:`torchbloop.Bloop`
does per step once it has the gradients, in the form Dynamo captures as one graph."""


def compiled_bloop_step(
    *,
    backend: str | Callable[..., Any] = "inductor",
    mode: str | None = None,
    dynamic: bool | None = None,
    foreach: bool = False,
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

    Returns:
        A function with the signature of :func:`bloop_step_`.
    """

    def step(*args: Any, **kwargs: Any) -> BloopDirection:
        kwargs.setdefault("foreach", foreach)
        return bloop_step_(*args, **kwargs)

    compiled: Callable[..., BloopDirection] = torch.compile(
        step, fullgraph=True, backend=backend, mode=mode, dynamic=dynamic
    )
    return compiled
