"""Cosine gating, weighted and unweighted: the coefficients on the Gram entries against the
float64 reference, and the defining property, on random inputs (scales 1e-10..1e15, f32/f64)."""

from __future__ import annotations

import math

import pytest
import torch
from _method_props import (
    PATHS,
    assert_vec_close,
    budget,
    combine,
    contract_step,
    flat,
    gram,
    norm,
    pairs,
    rtol_for,
)
from hypothesis import given, settings

from torchbloop.functional.cosine_gating import (
    CosineGatingFormula,
    cosine,
    cosine_gating_coefficients,
    cosine_gating_direction,
    cosine_gating_direction_reference,
)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)


def fast(main, aux, lam, weighted):
    g = gram([main, aux])
    c_m, c_a = cosine_gating_coefficients(g[0, 0], g[1, 0], g[1, 1], lam=lam, weighted=weighted)
    return combine([c_m, c_a], [main, aux])


def true_cosine(main, aux) -> float:
    m, a = flat(main), flat(aux)
    den = float(m.norm()) * float(a.norm())
    return float(m @ a) / den if den > 0 else 0.0


@pytest.mark.parametrize("weighted", [True, False])
@SETTINGS
@given(case=pairs())
def test_equals_reference(case, weighted):
    main, aux, lam = case
    cos = true_cosine(main, aux)
    if not weighted and abs(cos) < 100 * rtol_for(main[0].dtype):
        return  # the gate's side of 0 is decided by rounding here; checked by the next test
    d = fast(main, aux, lam, weighted)
    ref = cosine_gating_direction_reference(main, aux, lam=lam, weighted=weighted)
    assert_vec_close(d, ref, budget(main[0].dtype, norm(main), lam * norm(aux)), "vs reference")


@pytest.mark.parametrize("weighted", [True, False])
@SETTINGS
@given(case=pairs())
def test_mixed_when_aligned_main_otherwise(case, weighted):
    """``cos > 0``: ``g_m + lam * w * g_a`` with ``w = cos`` (weighted) or 1 (unweighted), i.e.
    Mixed for the unweighted form; ``cos <= 0`` (or a zero gradient): exactly ``g_m``."""
    main, aux, lam = case
    m, a = flat(main), flat(aux)
    cos = true_cosine(main, aux)
    d = flat(fast(main, aux, lam, weighted))
    tol = budget(main[0].dtype, norm(main), lam * norm(aux))
    near_zero = abs(cos) < 100 * rtol_for(main[0].dtype)
    if cos > 0 and not (near_zero and not weighted):
        assert_vec_close(d, m + lam * (cos if weighted else 1.0) * a, tol, "aligned")
    elif cos <= 0 and not near_zero:
        assert_vec_close(d, m, tol, "conflicting: g_m alone")


@SETTINGS
@given(case=pairs(zeros=False))
def test_cosine_from_gram_entries(case):
    """The cosine from the Gram entries is the cosine, within a few ulps, at every scale (norms
    taken separately: ``||g_m||^2 ||g_a||^2`` alone would overflow float32 at 1e15)."""
    main, aux, _ = case
    g = gram([main, aux])
    got = float(cosine(g[1, 0], g[0, 0], g[1, 1]))
    assert math.isclose(got, true_cosine(main, aux), abs_tol=50 * rtol_for(main[0].dtype))


def test_zero_gradients_close_the_gate():
    """A zero aux or main gradient has no cosine: the aux term is dropped (no 0/0, no NaN)."""
    z, x = [torch.zeros(2)], [torch.tensor([1.0, 2.0])]
    for weighted in (True, False):
        assert torch.equal(fast(x, z, 3.0, weighted)[0], x[0])
        assert torch.equal(fast(z, x, 3.0, weighted)[0], z[0])


def test_known_values():
    """``g_m = (1, 0)``, ``g_a = (1, 1)``: cos = 1/sqrt(2)."""
    m, a = (
        [torch.tensor([1.0, 0.0], dtype=torch.float64)],
        [torch.tensor([1.0, 1.0], dtype=torch.float64)],
    )
    w = fast(m, a, 2.0, True)[0]
    assert torch.allclose(
        w, torch.tensor([1.0 + 2 / math.sqrt(2), 2 / math.sqrt(2)], dtype=torch.float64)
    )
    assert torch.equal(fast(m, a, 2.0, False)[0], torch.tensor([3.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize(("kernel", "alias"), PATHS)
@pytest.mark.parametrize("weighted", [True, False])
@SETTINGS
@given(case=pairs())
def test_contract_path_equals_reference(case, weighted, kernel, alias):
    """The fast path (the contract, kernel or torch ops, new tensors or aliased) equals the
    float64 reference, and reports the cosine."""
    main, aux, lam = case
    cos = true_cosine(main, aux)
    formula = CosineGatingFormula(weighted=weighted)
    result = contract_step(formula, [main, aux], {"lam": lam}, kernel=kernel, alias=alias)
    # the Gram is accumulated from the inputs' values: float32 inputs give a float32-accurate cosine
    assert abs(float(result.info["cos"][0]) - cos) <= 1e-12 + 10 * rtol_for(main[0].dtype)
    if not weighted and abs(cos) < 100 * rtol_for(main[0].dtype):
        return
    ref = cosine_gating_direction_reference(main, aux, lam=lam, weighted=weighted)
    tol = budget(main[0].dtype, norm(main), lam * norm(aux))
    assert_vec_close(result.direction, ref, tol, "contract vs reference")


def test_direction_function():
    d = cosine_gating_direction(
        [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])], lam=2.0, weighted=False
    )
    assert torch.equal(d[0], torch.tensor([3.0, 2.0]))
