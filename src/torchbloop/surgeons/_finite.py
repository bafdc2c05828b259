"""The finiteness check of a step: one host synchronisation, before anything changes."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .._validation import NonFiniteGradientError
from ..distributed.sharded import local


class _AllTrue(Protocol):
    def all_true(self, flag: Tensor) -> Tensor: ...


def finite_flag(grads: list[Tensor], loss: Tensor | None, device: torch.device) -> Tensor:
    """0-dim bool tensor: the loss (if given) and every gradient are finite. No host sync.

    Uses the max-abs norm, which is finite exactly when every element is (no overflow of a
    sum of squares at large scales).
    """
    parts = (
        [n.float().reshape(1) for n in torch._foreach_norm(grads, float("inf"))] if grads else []
    )
    if loss is not None:
        parts.append(local(loss.detach()).float().reshape(1))
    if not parts:
        return torch.ones((), dtype=torch.bool, device=device)
    return torch.cat([p.to(device) for p in parts]).isfinite().all()


def all_finite(
    main: list[Tensor],
    aux: list[Tensor],
    losses: tuple[Tensor, Tensor] | None,
    *,
    raise_error: bool,
    reduce: _AllTrue | None,
    device: torch.device,
) -> bool:
    """Whether the step's losses and gradients are all finite (agreed over the mesh if sharded).

    Raises:
        NonFiniteGradientError: when they are not and ``raise_error``; the message names the
            loss (main, aux) whose loss or gradient is inf/NaN.
    """
    flags = {
        "main": finite_flag(main, losses[0] if losses else None, device),
        "aux": finite_flag(aux, losses[1] if losses else None, device),
    }
    ok = torch.stack(list(flags.values())).all()
    if reduce is not None:
        ok = reduce.all_true(ok)
    if bool(ok):
        return True
    if not raise_error:
        return False
    bad = [name for name, flag in flags.items() if not bool(flag)] or [
        "main or aux (on another rank)"
    ]
    raise NonFiniteGradientError(
        f"Non-finite {' and '.join(bad)} loss or gradient (inf or NaN); nothing was changed. "
        "Pass nonfinite='skip' to skip such steps instead."
    )
