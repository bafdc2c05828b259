"""Build the surgeon of a run from the method table (:data:`torchbloop.methods.METHODS`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ... import methods as method_table


def sweep_hyperparameters(method: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``method`` declares in the table (the others are dropped).

    A sweep records every hyperparameter for every run (e.g. ``rho`` for Mixed, which ignores
    it); the surgeon receives only what its table entry lists.

    Raises:
        ValueError: unknown method, or a hyperparameter the method declares is not in ``values``.

    Example:
        >>> sweep_hyperparameters("mixed", {"lam": 0.1, "rho": 0.01})
        {'lam': 0.1}
    """
    info = method_table.get_method(method)
    missing = [h for h in info.hyperparameters if h not in values]
    if missing:
        raise ValueError(
            f"Invalid hyperparameters for {method!r}: missing {missing} (given: {sorted(values)})"
        )
    return {h: values[h] for h in info.hyperparameters}


def make_surgeon(
    method: str, params: Iterable[torch.Tensor], lam: float | Iterable[float], rho: float
) -> Any:
    """Build the surgeon of ``method`` over ``params`` with the table's factory.

    Args:
        method: a name in :data:`torchbloop.methods.METHODS`.
        params: the parameters whose ``.grad`` receives the combined direction.
        lam: weight of the aux loss, or one weight per aux loss (highest priority first).
        rho: Bloop's EMA weight of the newest main gradient; passed only to the methods whose
            table entry lists ``"rho"`` (the others use the current batch gradients, as in the
            paper).

    Returns:
        An object with ``backward(main=..., aux=...)``.

    Raises:
        ValueError: unknown method (the message lists the valid ones), or more aux weights
            than the method's ``max_aux``.
    """
    info = method_table.get_method(method)
    weights: float | list[float] = (
        float(lam) if isinstance(lam, (int, float)) else [float(x) for x in lam]
    )
    if isinstance(weights, list) and len(weights) == 1:
        weights = weights[0]  # one aux loss: the plain float form every method accepts
    k = 1 if isinstance(weights, float) else len(weights)
    if info.max_aux is not None and k > info.max_aux:
        raise ValueError(
            f"Invalid lam with {k} values for method {method!r}: it takes at most "
            f"{info.max_aux} aux loss(es)"
        )
    return info.factory(params, **sweep_hyperparameters(method, {"lam": weights, "rho": rho}))
