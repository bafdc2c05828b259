"""Bloop's two passes in the form of the first, Bloop-only kernel, over :func:`gram` and
:func:`lincomb`. Kept until ``functional/_fused.py`` calls the generic functions; then delete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class Prepared(NamedTuple):
    """The three lists of one step (``g_main``, ``g_aux``, ``e``)."""

    main: Sequence[Tensor]
    aux: Sequence[Tensor]
    ema: Sequence[Tensor]


def prepare(main: Sequence[Tensor], aux: Sequence[Tensor], ema: Sequence[Tensor]) -> Prepared:
    """Bundles lists that satisfy :func:`usable` for :func:`dots` and :func:`combine`."""
    return Prepared(main, aux, ema)


def dots(lists: Prepared, *, rho: float | None = None) -> tuple[float, float]:
    """``(<aux, ema>, <ema, ema>)`` summed over the lists, in double.

    With ``rho`` given, ``ema <- (1 - rho) ema + rho main`` first (one more pass) and the inner
    products are those of the updated EMA (Bloop's "code" order).
    """
    from . import gram, lincomb

    if rho is not None:
        mix = torch.tensor([[[1.0 - rho, rho]]], dtype=torch.float64)
        lincomb([lists.ema, lists.main], [lists.ema], mix)
    result = gram([lists.aux, lists.ema], [(0, 1), (1, 1)])
    return float(result[0, 0]), float(result[0, 1])


def combine(lists: Prepared, *, lam: float, ncoef: float, rho: float | None = None) -> None:
    """``aux <- main + lam * aux + ncoef * ema`` (the direction, written over ``aux``), then
    ``ema <- (1 - rho) ema + rho main`` if ``rho`` is given (Bloop's "paper" order), in one pass."""
    from . import lincomb

    rows = [[1.0, lam, ncoef]]
    outputs = [lists.aux]
    if rho is not None:
        rows.append([rho, 0.0, 1.0 - rho])
        outputs.append(lists.ema)
    coefs = torch.tensor([rows], dtype=torch.float64)
    lincomb([lists.main, lists.aux, lists.ema], outputs, coefs)
