"""Map method names to the public gradient-surgery classes of :mod:`torchbloop`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .registry import METHODS


def make_surgeon(method: str, params: Iterable[torch.Tensor], lam: float, rho: float) -> Any:
    """Build the surgeon of ``method`` over ``params``.

    Args:
        method: one of :data:`~torchbloop.experiments.registry.METHODS`.
        params: the parameters whose ``.grad`` receives the combined direction.
        lam: weight of the aux loss.
        rho: Bloop's EMA weight of the newest main gradient; ignored by the other methods
            (they use the current batch gradients, as in the paper).

    Returns:
        An object with ``backward(main=..., aux=...)``.

    Raises:
        ValueError: unknown method (the message lists the valid ones).
    """
    import torchbloop

    if method == "bloop":
        return torchbloop.Bloop(params, lam=lam, rho=rho)
    if method == "mixed":
        return torchbloop.Mixed(params, lam=lam)
    if method == "pcgrad":
        return torchbloop.PCGrad(params, lam=lam)
    if method == "dynamic_barrier":
        return torchbloop.DynamicBarrier(params, lam=lam)
    raise ValueError(f"Unknown method {method!r}: valid methods are {', '.join(METHODS)}")
