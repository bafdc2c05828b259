"""Reusable property asserts and structured random inputs for the core tests.

The asserts state the properties of ``docs/method.md`` section 2 for any direction function
``fn(main, aux, ema, lam) -> list[Tensor]`` (Mixed, PCGrad and Dynamic Barrier ignore ``ema``).
Every comparison is made in float64 on the CPU, relative to the norms of the inputs, so that one
tolerance works at every scale from 1e-10 to 1e15.

The ``*_formula`` functions are written here, independently of the library's ``_reference``
twins, in plain float64 arithmetic on one flat vector each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from hypothesis import strategies as st
from torch import Tensor

DirectionFn = Callable[[list[Tensor], list[Tensor], list[Tensor], float], list[Tensor]]

# --------------------------------------------------------------------------- inputs

SHAPE_SETS: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((7,),),
    ((),),
    ((3, 4), (4,), ()),
    ((2, 3, 2), (0,), (5,)),
    ((1,), (1, 1), (2, 2)),
    ((16, 3), (3,)),
)
"""Lists of parameter shapes: 0-dim tensors, empty tensors among others, mixed ranks."""

SCALES = (1e-10, 1e-5, 1.0, 1e5, 1e10, 1e15)
"""Gradient scales. float32 keeps ||x||^2 finite at 1e15: at most 51 elements here, each
squared at most ~1e32, so sums stay below ~1e34 < 3.4e38 (float32's largest value)."""

DTYPES = (torch.float32, torch.float64)
LAMS = (0.0, 1e-3, 0.1, 1.0, 10.0, 1e3)


def rtol_for(dtype: torch.dtype) -> float:
    """A relative tolerance for results computed in ``dtype`` (a few hundred ulps)."""
    return {torch.float64: 1e-11, torch.float32: 2e-5, torch.bfloat16: 5e-2}[dtype]


def random_list(
    shapes: Sequence[tuple[int, ...]], *, seed: int, scale: float, dtype: torch.dtype
) -> list[Tensor]:
    """Standard normal tensors of the given shapes, times ``scale``, drawn in float64."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen, dtype=torch.float64) * scale).to(dtype) for s in shapes]


@st.composite
def gradient_triples(draw: st.DrawFn) -> tuple[list[Tensor], list[Tensor], list[Tensor], float]:
    """``(main, aux, ema, lam)``: aligned lists of one dtype and scale, random lam.

    About one draw in two replaces ``main``, ``aux``, ``ema`` or all three by zeros.
    """
    shapes = draw(st.sampled_from(SHAPE_SETS))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from(SCALES))
    seed = draw(st.integers(0, 2**20))
    lam = draw(st.sampled_from(LAMS))
    main = random_list(shapes, seed=seed, scale=scale, dtype=dtype)
    aux = random_list(shapes, seed=seed + 1, scale=scale, dtype=dtype)
    ema = random_list(shapes, seed=seed + 2, scale=scale, dtype=dtype)
    zero = draw(st.sampled_from((None, None, None, "main", "aux", "ema", "all")))
    if zero in ("main", "all"):
        main = [torch.zeros_like(t) for t in main]
    if zero in ("aux", "all"):
        aux = [torch.zeros_like(t) for t in aux]
    if zero in ("ema", "all"):
        ema = [torch.zeros_like(t) for t in ema]
    return main, aux, ema, lam


# --------------------------------------------------------------------------- flat float64


def flat(xs: Sequence[Tensor]) -> Tensor:
    """One float64 CPU vector (independent of the library's own helper)."""
    if not xs:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([x.detach().to("cpu", torch.float64).reshape(-1) for x in xs])


def norm(xs: Sequence[Tensor]) -> float:
    return float(flat(xs).norm())


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(flat(a) @ flat(b))


def scaled(xs: Sequence[Tensor], c: float) -> list[Tensor]:
    return [(x.double() * c).to(x.dtype) for x in xs]


def assert_close(
    actual: Sequence[Tensor], expected: Sequence[Tensor] | Tensor, *, atol: float, what: str = ""
) -> None:
    """``||actual - expected|| <= atol`` over the whole flattened list (float64)."""
    exp = expected if isinstance(expected, Tensor) else flat(expected)
    err = float((flat(actual) - exp).norm())
    assert err <= atol, f"{what}: ||actual - expected|| = {err:.3e} > {atol:.3e}"


def assert_same_layout(actual: Sequence[Tensor], like: Sequence[Tensor]) -> None:
    assert len(actual) == len(like), f"{len(actual)} tensors for {len(like)} inputs"
    for a, b in zip(actual, like):
        assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"dtype {a.dtype} != {b.dtype}"


# --------------------------------------------------------------------------- formulas


def _pi(a: Tensor, e: Tensor) -> Tensor:
    den = float(e @ e)
    if den == 0.0 or not math.isfinite(den):
        return a
    return a - (float(a @ e) / den) * e


def bloop_formula(main, aux, ema, lam: float) -> Tensor:
    """``g_main + lam * pi(g_aux; e)`` as one float64 vector."""
    return flat(main) + lam * _pi(flat(aux), flat(ema))


def mixed_formula(main, aux, ema, lam: float) -> Tensor:
    return flat(main) + lam * flat(aux)


def pcgrad_formula(main, aux, ema, lam: float) -> Tensor:
    m, a = flat(main), flat(aux)
    if float(m @ a) >= 0:
        return m + lam * a
    return _pi(m, a) + lam * _pi(a, m)


def dynamic_barrier_formula(main, aux, ema, lam: float) -> Tensor:
    m, a = flat(main), flat(aux)
    mm = float(m @ m)
    mu = 1.0 if mm == 0.0 else max(1.0 - lam * float(m @ a) / mm, 0.0)
    return mu * m + lam * a


def formula_tolerance(main, aux, ema, lam: float, dtype: torch.dtype) -> float:
    """Rounding budget for a direction: relative to ||g_main|| + lam ||g_aux|| (+ tiny)."""
    return rtol_for(dtype) * 10 * (norm(main) + lam * norm(aux)) + 1e-300


# --------------------------------------------------------------------------- properties


def assert_matches_formula(fn: DirectionFn, formula, main, aux, ema, lam: float) -> None:
    d = fn(main, aux, ema, lam)
    assert_same_layout(d, main)
    # Every subtracted projection is bounded by the norm of what it is subtracted from
    # (||pi(a; b) - a|| <= ||a||), so rounding stays within eps * (||g_main|| + lam ||g_aux||).
    budget = formula_tolerance(main, aux, ema, lam, main[0].dtype)
    assert_close(d, formula(main, aux, ema, lam), atol=budget, what="direction vs formula")


def assert_orthogonal_to_ema(main, aux, ema, lam: float, direction) -> None:
    """``<d - g_main, e> = 0`` relative to ``(||g_main|| + lam ||g_aux||) ||e||``."""
    e = flat(ema)
    dev = float((flat(direction) - flat(main)) @ e)
    bound = rtol_for(main[0].dtype) * 10 * (norm(main) + lam * norm(aux)) * float(e.norm())
    assert abs(dev) <= bound + 1e-300, f"<d - g_main, e> = {dev:.3e}, bound {bound:.3e}"


def assert_lam_zero_gives_main(fn: DirectionFn, main, aux, ema) -> None:
    d = fn(main, aux, ema, 0.0)
    assert_close(d, main, atol=rtol_for(main[0].dtype) * norm(main), what="lam=0")


def assert_parallel_aux_gives_main(fn: DirectionFn, main, ema, lam: float, alpha: float) -> None:
    """``g_aux = alpha * e`` has nothing left after the projection: ``d = g_main``."""
    aux = scaled(ema, alpha)
    d = fn(main, aux, ema, lam)
    budget = rtol_for(main[0].dtype) * 10 * (norm(main) + lam * norm(aux))
    assert_close(d, main, atol=budget, what="g_aux parallel to e")


def orthogonalised(aux: Sequence[Tensor], ema: Sequence[Tensor]) -> list[Tensor]:
    """``aux`` with its component along ``ema`` removed (float64), in ``aux``'s layout."""
    a, e = flat(aux), flat(ema)
    vec = _pi(a, e)
    out, start = [], 0
    for t in aux:
        n = t.numel()
        out.append(vec[start : start + n].reshape(t.shape).to(t.dtype))
        start += n
    return out


def assert_orthogonal_aux_gives_mixed(fn: DirectionFn, main, aux, ema, lam: float) -> None:
    """``<g_aux, e> = 0`` leaves ``g_aux`` whole: ``d = g_main + lam g_aux``.

    ``aux`` is first made orthogonal to ``ema``; what rounding leaves along ``e`` is of the
    order eps * ||aux||, hence the budget relative to the original ``aux``.
    """
    aux_orth = orthogonalised(aux, ema)
    d = fn(main, aux_orth, ema, lam)
    budget = rtol_for(main[0].dtype) * 10 * (norm(main) + lam * norm(aux))
    assert_close(
        d, mixed_formula(main, aux_orth, ema, lam), atol=budget, what="g_aux orthogonal to e"
    )


def assert_invariant_to_ema_scale(fn: DirectionFn, main, aux, ema, lam: float, c: float) -> None:
    d1 = fn(main, aux, ema, lam)
    d2 = fn(main, aux, scaled(ema, c), lam)
    budget = rtol_for(main[0].dtype) * 10 * (norm(main) + lam * norm(aux))
    assert_close(d2, flat(d1), atol=budget, what=f"e rescaled by {c:g}")


def assert_positively_homogeneous(fn: DirectionFn, main, aux, ema, lam: float, c: float) -> None:
    """Scaling both gradients by ``c > 0`` scales ``d`` by ``c``."""
    d1 = fn(main, aux, ema, lam)
    d2 = fn(scaled(main, c), scaled(aux, c), ema, lam)
    budget = rtol_for(main[0].dtype) * 20 * c * (norm(main) + lam * norm(aux)) + 1e-300
    assert_close(d2, c * flat(d1), atol=budget, what=f"gradients scaled by {c:g}")
