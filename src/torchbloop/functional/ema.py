"""The exponential moving average of main-loss gradients (method.md section 3)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import TensorList


def ema_update_(ema: list[Tensor], grads: TensorList, *, rho: float, foreach: bool = True) -> None:
    """Update the EMA in place: ``e <- (1 - rho) * e + rho * g``.

    ``rho`` is the weight of the NEW gradient (the paper's notation): ``rho = 1`` replaces the
    EMA with ``g``; small ``rho`` means a long memory. Gradients in a lower precision than the
    EMA are upcast first, so a float32 EMA of bfloat16 gradients stays float32.

    Args:
        ema: the EMA tensors, updated in place.
        grads: the current main-loss gradients, aligned with ``ema``.
        rho: weight of the new gradient, in (0, 1].
        foreach: use the multi-tensor kernels.

    Example:
        >>> import torch
        >>> e = [torch.tensor([0.0, 4.0])]
        >>> ema_update_(e, [torch.tensor([2.0, 0.0])], rho=0.5)
        >>> e
        [tensor([1., 2.])]
    """
    if not ema:
        return
    grads = [g if g.dtype == e.dtype else g.to(e.dtype) for e, g in zip(ema, grads)]
    if foreach:
        torch._foreach_lerp_(ema, grads, rho)
    else:
        for e, g in zip(ema, grads):
            e.lerp_(g, rho)


def ema_update_reference(ema: TensorList, grads: TensorList, *, rho: float) -> list[Tensor]:
    """Slow reference for :func:`ema_update_` (returns new tensors, float64 arithmetic)."""
    new = (1.0 - rho) * flat64(ema) + rho * flat64(grads)
    return unflat(new, ema)
