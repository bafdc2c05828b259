"""Inputs, tolerances and a plain two-pass evaluation for the Table-1 method tests.

``gram`` and ``combine`` evaluate a coefficient function the way the fast path does (inner
products accumulated in the gradients' dtype, at least float32; the direction written in the
gradients' dtype), but with plain torch ops, so the tests of the coefficient functions do not
depend on the surgery contract. Everything compared is compared in float64 on the CPU, relative
to the norms of the inputs, so one tolerance works at every scale from 1e-10 to 1e15.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st
from torch import Tensor

from _asserts import DTYPES, SCALES, SHAPE_SETS, flat, norm, random_list, rtol_for

LAMS = (0.0, 1e-3, 0.1, 1.0, 10.0, 1e3)

AUX_RATIOS = (1e-3, 1.0, 1.0, 1e3)
"""``||g_a|| / ||g_m||`` roughly: the two gradients need not have one scale."""

UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def gram(vectors: Sequence[Sequence[Tensor]]) -> Tensor:
    """The full Gram matrix of the lists, accumulated like the fast path (>= float32)."""
    acc = accumulation_dtype(vectors[0][0].dtype)
    flats = [torch.cat([t.reshape(-1).to(acc) for t in v]) for v in vectors]
    return torch.stack([torch.stack([a @ b for b in flats]) for a in flats])


def combine(coefs: Sequence[Tensor | float], vectors: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """``sum_i c_i v_i`` tensor by tensor, computed in the coefficients' dtype, written in the
    vectors' dtype (what one linear-combination pass does)."""
    out = []
    for parts in zip(*vectors):
        acc = sum(torch.as_tensor(c) * p for c, p in zip(coefs, parts))
        out.append(torch.as_tensor(acc).to(parts[0].dtype))
    return out


def budget(dtype: torch.dtype, *norms: float, factor: float = 10.0) -> float:
    """Rounding budget: ``factor * rtol * sum(norms)`` (+ the smallest double, for zeros)."""
    return factor * rtol_for(dtype) * sum(norms) + 1e-300


def assert_vec_close(
    actual: Sequence[Tensor] | Tensor, expected: Sequence[Tensor] | Tensor, atol: float, what: str
) -> None:
    a = actual if isinstance(actual, Tensor) else flat(actual)
    e = expected if isinstance(expected, Tensor) else flat(expected)
    err = float((a.double() - e.double()).norm())
    assert err <= atol, f"{what}: ||actual - expected|| = {err:.3e} > {atol:.3e}"


@st.composite
def pairs(draw: st.DrawFn, *, zeros: bool = True) -> tuple[list[Tensor], list[Tensor], float]:
    """``(main, aux, lam)``: aligned lists of one dtype, ``aux`` at 1e-3, 1 or 1e3 times the
    scale of ``main`` (about one draw in three replaces main, aux or both by zeros when
    ``zeros``). float32 stays finite: at most 51 elements of at most ~1e18 (times lam <= 1e3)."""
    shapes = draw(st.sampled_from(SHAPE_SETS))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from(SCALES))
    seed = draw(st.integers(0, 2**20))
    lam = draw(st.sampled_from(LAMS))
    ratio = draw(st.sampled_from(AUX_RATIOS))
    main = random_list(shapes, seed=seed, scale=scale, dtype=dtype)
    aux = random_list(shapes, seed=seed + 1, scale=scale * ratio, dtype=dtype)
    if zeros:
        which = draw(st.sampled_from((None, None, None, None, "main", "aux", "both")))
        if which in ("main", "both"):
            main = [torch.zeros_like(t) for t in main]
        if which in ("aux", "both"):
            aux = [torch.zeros_like(t) for t in aux]
    return main, aux, lam


__all__ = [
    "LAMS",
    "SCALES",
    "UNIT_ROUNDOFF",
    "assert_vec_close",
    "budget",
    "combine",
    "flat",
    "gram",
    "norm",
    "pairs",
    "random_list",
    "rtol_for",
]


PATHS = [(True, False), (True, True), (False, False), (False, True)]
"""``(kernel, alias)``: the fused CPU kernel allowed or torch ops forced; the direction written
into new tensors or into the aux gradient list (aliasing an input)."""


def contract_step(formula, grads, hyper, *, kernel: bool, alias: bool, **kwargs):
    """One :class:`SurgeryStep` of ``formula`` on copies of ``grads``; returns its result."""
    from torchbloop.functional import SurgeryStep

    grads = [[t.clone() for t in g] for g in grads]
    out = grads[-1] if alias else None
    step = SurgeryStep(formula, grads, [], hyper=hyper, out=out, kernel=kernel, **kwargs)
    return step.apply()
