"""The projection coefficient, shared by Bloop and the diagnostics."""

from __future__ import annotations

import torch
from torch import Tensor


def projection_coefficient(num: Tensor, den: Tensor) -> tuple[Tensor, Tensor]:
    """``num / den`` where the projection is defined, 0 where it is skipped.

    The projection of ``a`` on ``e`` is ``(<a, e> / ||e||^2) e``; call with ``num = <a, e>``
    and ``den = ||e||^2``. When ``den`` is zero or not finite the projection is skipped (the
    coefficient is 0) instead of producing ``0 / 0``; no epsilon is added, so the result is
    exact at every representable scale. No host synchronisation.

    Returns:
        ``(coef, skipped)``: 0-dim tensors, ``skipped`` boolean.

    Example:
        >>> import torch
        >>> projection_coefficient(torch.tensor(3.0), torch.tensor(2.0))
        (tensor(1.5000), tensor(False))
        >>> projection_coefficient(torch.tensor(0.0), torch.tensor(0.0))
        (tensor(0.), tensor(True))
    """
    valid = torch.isfinite(den) & (den > 0)
    safe_den = torch.where(valid, den, torch.ones_like(den))
    coef = torch.where(valid, num / safe_den, torch.zeros_like(num))
    return coef, ~valid
