"""Mixed precision: how a surgeon works with a ``torch.amp.GradScaler``.

``surgeon.backward(main=..., aux=..., scaler=scaler)`` takes the *unscaled* losses. The surgeon
differentiates ``scale * loss`` (so small float16 gradients do not underflow), divides the
gradients by the scale before anything else sees them (the EMA and the inner products work on
true gradients), and writes ``scale * direction`` into ``.grad``. ``scaler.step(opt)`` then
unscales ``.grad`` and steps as usual, and ``scaler.update()`` adapts the scale.

On a step whose gradients overflow (inf or NaN), the surgeon changes none of its state (EMA,
``step_count``; ``skipped_steps`` counts the step) and fills ``.grad`` with NaN, so that the scaler
sees the overflow, skips ``opt.step`` and backs off the scale. This happens whatever the surgeon's
``nonfinite`` setting: overflow is a normal event under loss scaling.

Scales are powers of two, so with float32 gradients scaling and unscaling are exact: training
with a scaler gives the same numbers as training without (tested).

Example:
    >>> import torch
    >>> from torchbloop import Bloop
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    >>> surgeon = Bloop(model.parameters(), lam=0.1)
    >>> x = torch.randn(4, 3)
    >>> main = model(x).pow(2).mean()
    >>> aux = model.weight.pow(2).sum()
    >>> surgeon.backward(main=main, aux=aux, scaler=scaler)
    >>> scaler.step(opt)
    >>> scaler.update()
    >>> surgeon.step_count
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from .distributed.sharded import local

__all__ = ["autocast_disabled", "loss_scale", "poison_", "rescale_", "unscale_"]


def loss_scale(scaler: Any, device: torch.device) -> Tensor | None:
    """The scaler's current scale as a 0-dim float32 tensor on ``device`` (no host sync).

    Returns ``None`` when there is no scaler or it is disabled. Uses only the public
    ``GradScaler.scale`` (scaling a tensor of one).

    Example:
        >>> import torch
        >>> loss_scale(torch.amp.GradScaler("cpu", init_scale=8.0), torch.device("cpu"))
        tensor(8.)
        >>> loss_scale(None, torch.device("cpu")) is None
        True
    """
    if scaler is None:
        return None
    if not (
        callable(getattr(scaler, "scale", None)) and callable(getattr(scaler, "is_enabled", None))
    ):
        raise TypeError(f"Invalid scaler={scaler!r}: expected a torch.amp.GradScaler or None")
    if not scaler.is_enabled():
        return None
    scale: Tensor = scaler.scale(torch.ones((), dtype=torch.float32, device=device))
    return scale


def _present(grads: Sequence[Tensor | None]) -> list[Tensor]:
    return [local(g) for g in grads if g is not None]


def unscale_(grads: Sequence[Tensor | None], scale: Tensor) -> None:
    """Divide the gradients by ``scale`` in place (multiplying by ``1/scale`` as GradScaler does)."""
    present = _present(grads)
    if present:
        inv = scale.double().reciprocal().float()
        torch._foreach_mul_(present, inv)


def rescale_(grads: Sequence[Tensor | None], scale: Tensor) -> None:
    """Multiply the gradients by ``scale`` in place (what ``.grad`` holds for the scaler)."""
    present = _present(grads)
    if present:
        torch._foreach_mul_(present, scale)


def poison_(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    """Fill ``.grad`` with NaN where a gradient exists, so ``GradScaler.step`` skips the step."""
    for p, g in zip(params, grads):
        if g is None:
            continue
        if p.grad is None:
            p.grad = torch.full_like(p, float("nan"))
        else:
            p.grad.fill_(float("nan"))


def autocast_disabled(params: Sequence[Tensor]) -> AbstractContextManager[Any]:
    """A context that turns autocast off on the parameters' device type.

    Surgeons compute directions and inner products inside it, so a ``backward`` called within
    an ``autocast`` region still accumulates in float32 and keeps the gradients' dtypes.
    """
    if not params:
        return nullcontext()
    device_type = params[0].device.type
    if device_type not in ("cpu", "cuda", "xpu", "mps", "hpu"):
        return nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)
