"""Helpers for the slow references: everything as one float64 vector."""

from __future__ import annotations

import torch
from torch import Tensor

from ._types import TensorList


def flat64(tensors: TensorList) -> Tensor:
    """All tensors flattened and concatenated, in float64 on the CPU."""
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])


def unflat(vec: Tensor, like: TensorList) -> list[Tensor]:
    """Split a flat vector back into tensors shaped, typed and placed like ``like``."""
    out, start = [], 0
    for t in like:
        n = t.numel()
        out.append(vec[start : start + n].reshape(t.shape).to(t.device, t.dtype))
        start += n
    return out


def project_out64(a: Tensor, e: Tensor) -> Tensor:
    """``a`` minus its component along ``e``; ``a`` unchanged when ``||e||^2`` is 0 or not finite."""
    den = float(e @ e)
    if den == 0.0 or not torch.isfinite(torch.tensor(den)):
        return a.clone()
    return a - (float(a @ e) / den) * e
