"""The finiteness check of a step: one host synchronisation, before anything changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from .._validation import NonFiniteGradientError
from ..distributed.sharded import local


class _AllTrue(Protocol):
    def all_true(self, flag: Tensor) -> Tensor: ...


def finite_flag(
    grads: list[Tensor], loss: Tensor | None, device: torch.device, *, exact: bool = False
) -> Tensor:
    """0-dim bool tensor: the loss (if given) and every gradient are finite. No host sync.

    The fast form looks at the 2-norms (one cheap multi-tensor kernel); a sum of squares can
    overflow for huge finite gradients (about 1e19 in float32), so it may say "not finite"
    wrongly, never "finite" wrongly. ``exact=True`` uses the max-abs norm, finite exactly when
    every element is, but several times slower on the CPU.
    """
    order = float("inf") if exact else 2.0
    parts = [n.float().reshape(1) for n in torch._foreach_norm(grads, order)] if grads else []
    if loss is not None:
        parts.append(local(loss.detach()).float().reshape(1))
    if not parts:
        return torch.ones((), dtype=torch.bool, device=device)
    return torch.cat([p.to(device) for p in parts]).isfinite().all()


def all_finite(
    grads: Sequence[list[Tensor]],
    losses: Sequence[Tensor] | None,
    names: Sequence[str],
    *,
    raise_error: bool,
    reduce: _AllTrue | None,
    device: torch.device,
) -> bool:
    """Whether the step's losses and gradients are all finite (agreed over the mesh if sharded).

    One host synchronisation (and, sharded, one small collective) when they are; a "no" from
    the fast check is confirmed with the exact one before anything is raised or skipped.

    Args:
        grads: one gradient list per loss, main first.
        losses: the losses (checked too), or ``None``.
        names: how the message names each loss.

    Raises:
        NonFiniteGradientError: when they are not and ``raise_error``; the message names the
            loss whose value or gradient is inf/NaN.
    """
    for exact in (False, True):
        flags = [
            finite_flag(g, losses[i] if losses else None, device, exact=exact)
            for i, g in enumerate(grads)
        ]
        ok = torch.stack(flags).all()
        if reduce is not None:
            ok = reduce.all_true(ok)
        if bool(ok):
            return True
    if not raise_error:
        return False
    bad = [name for name, flag in zip(names, flags) if not bool(flag)] or [
        "a (on another rank)"
    ]
    raise NonFiniteGradientError(
        f"Non-finite {' and '.join(bad)} loss or gradient (inf or NaN); nothing was changed. "
        "Pass nonfinite='skip' to skip such steps instead."
    )


def raise_nonfinite_direction() -> None:
    """The message for a direction that overflows although every gradient is finite."""
    raise NonFiniteGradientError(
        "Non-finite direction (inf or NaN) from finite gradients: lam is too large for these "
        "gradients; nothing was changed. Pass nonfinite='skip' to skip such steps instead."
    )
