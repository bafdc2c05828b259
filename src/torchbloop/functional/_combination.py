"""Linear combinations of tensor lists with scalar or 0-dim-tensor coefficients.

Every direction in this library is ``a * g_main + b * g_aux (+ c * e)`` with coefficients that
are either Python numbers or 0-dim tensors computed on the device (so no host synchronisation).
These two helpers are the only kernels that touch whole gradients; the methods only compute
coefficients.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from . import _blocked
from ._types import TensorList

Coef = float | Tensor


def _is_number(c: Coef) -> bool:
    return isinstance(c, numbers.Number)


def _aliases(a: TensorList, b: TensorList) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _scale_(xs: list[Tensor], c: Coef, foreach: bool) -> None:
    if _is_number(c) and c == 1:
        return
    if foreach:
        torch._foreach_mul_(xs, c)
    else:
        for x in xs:
            x.mul_(c)


def add_scaled_(out: list[Tensor], c: Coef, xs: TensorList, *, foreach: bool = True) -> None:
    """``out += c * xs`` in place, element by element of the lists.

    ``c`` may be a Python number or a 0-dim tensor (kept on the device). Dtypes may differ
    (e.g. a float32 EMA added into bfloat16 gradients): the arithmetic follows torch's type
    promotion and the result is written in ``out``'s dtype.
    """
    if not out:
        return
    if _is_number(c):
        if c == 0:
            return
        if foreach and all(o.dtype == x.dtype for o, x in zip(out, xs)):
            torch._foreach_add_(out, list(xs), alpha=c)  # type: ignore[arg-type]
        else:
            for o, x in zip(out, xs):
                o.add_(x, alpha=c)  # type: ignore[arg-type]
        return
    if foreach:
        torch._foreach_addcmul_(out, list(xs), [c] * len(out))  # type: ignore[arg-type, list-item]
    else:
        for o, x in zip(out, xs):
            o.addcmul_(x, c)  # type: ignore[arg-type]


def axpby(
    a: Coef,
    x: TensorList,
    b: Coef,
    y: TensorList,
    *,
    out: list[Tensor] | None = None,
    foreach: bool = True,
) -> list[Tensor]:
    """``a * x + b * y`` for aligned lists, written into ``out`` (which may alias ``x`` or ``y``).

    Returns:
        The list holding the result: ``out`` if given, else new tensors in ``x``'s dtypes.
    """
    if out is not None and _aliases(out, y):
        if _is_number(a) and a == 1 and _is_number(b) and foreach and _blocked.blockable(x, y):
            _blocked.add_project_(x, out, float(b))  # out = x + b * out, one pass on the CPU
            return out
        _scale_(out, b, foreach)
        add_scaled_(out, a, x, foreach=foreach)
        return out
    if out is not None and _aliases(out, x):
        _scale_(out, a, foreach)
        add_scaled_(out, b, y, foreach=foreach)
        return out
    if foreach:
        result = list(torch._foreach_mul(list(x), a))  # type: ignore[arg-type]
    else:
        result = [t.mul(a) for t in x]
    # A 0-dim tensor times a 0-dim tensor coefficient promotes (bf16 * f32 -> f32): keep x's dtype.
    result = [r if r.dtype == t.dtype else r.to(t.dtype) for r, t in zip(result, x)]
    add_scaled_(result, b, y, foreach=foreach)
    if out is None:
        return result
    for o, r in zip(out, result):
        o.copy_(r)
    return out
