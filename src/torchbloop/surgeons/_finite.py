"""The finiteness check of a step: one host synchronisation, before anything changes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from .._validation import NonFiniteGradientError
from ..distributed.sharded import local
from ..functional import SurgeryStep


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


def check_step(
    step: SurgeryStep | None,
    grads: Sequence[list[Tensor]],
    losses: Sequence[Tensor] | None,
    names: Sequence[str],
    *,
    raise_error: bool,
    reduce: _AllTrue | None,
    sitting_out: list[Tensor] | None = None,
) -> bool:
    """Whether a step may proceed: its losses, gradients AND outputs are all finite.

    Read from the step's first pass: every gradient's squared norm (float64, from the Gram)
    and a bound on the direction and the new state (:meth:`SurgeryStep.surely_finite`), plus
    the losses: one host synchronisation (and, sharded, one small collective) when all is
    well. A "no" is confirmed exactly before anything is raised or skipped: the gradients by
    their max-abs norms (a float64 sum of squares overflows only beyond ~1e154), the outputs by
    computing them aside (:meth:`SurgeryStep.outputs_finite`), so a huge ``lam`` that would
    overflow the direction is caught like a non-finite gradient.

    ``sitting_out``: main gradients of parameters outside the step (a group with ``lam = 0``,
    whose direction is its main gradient); ``step`` is ``None`` when every parameter sits out.

    Raises:
        NonFiniteGradientError: when something is not finite and ``raise_error``; the message
            names the loss whose value or gradient is inf/NaN, or says the direction is.
    """
    device = local(grads[0][0]).device
    if step is not None:
        sq = step.sq_norms()
        per_loss = torch.isfinite(sq)
        direction_ok = step.surely_finite().reshape(1)
    else:
        per_loss = torch.ones(len(grads), dtype=torch.bool, device=device)
        direction_ok = torch.ones(1, dtype=torch.bool, device=device)
    if sitting_out:
        ok = finite_flag(sitting_out, None, per_loss.device)
        per_loss = per_loss & torch.cat([ok.reshape(1), per_loss.new_ones(len(grads) - 1)])
    if losses is not None:
        values = torch.stack(
            [local(loss.detach()).to(per_loss.device, torch.float64) for loss in losses]
        )
        per_loss = per_loss & torch.isfinite(values.reshape(-1))
    flags = torch.cat([per_loss, direction_ok.to(per_loss.device)])
    if reduce is not None:
        flags = reduce.all_true(flags)
    if bool(flags.all()):
        return True
    exact = torch.stack(
        [
            finite_flag(list(g), losses[i] if losses else None, device, exact=True)
            for i, g in enumerate(grads)
        ]
    )
    if reduce is not None:
        exact = reduce.all_true(exact)
    bad = [name for name, ok in zip(names, exact.tolist()) if not ok]
    if bad:
        if raise_error:
            raise NonFiniteGradientError(
                f"Non-finite {' and '.join(bad)} loss or gradient (inf or NaN); nothing was "
                "changed. Pass nonfinite='skip' to skip such steps instead."
            )
        return False
    outputs = torch.tensor(step is None or step.outputs_finite(), device=device)
    if reduce is not None:
        outputs = reduce.all_true(outputs)
    if bool(outputs):
        return True
    if raise_error:
        raise NonFiniteGradientError(
            "Non-finite direction (inf or NaN) from finite losses and gradients: a weight (lam) "
            "too large for these gradients; nothing was changed. Pass nonfinite='skip' to skip "
            "such steps instead."
        )
    return False
