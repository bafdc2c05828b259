"""A-GEM (main protected): the coefficients on the Gram entries against the float64 reference,
and the properties that define the method, on random inputs (scales 1e-10..1e15, f32/f64)."""

from __future__ import annotations

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

from torchbloop.functional.agem import (
    AGEMFormula,
    agem_coefficients,
    agem_direction,
    agem_direction_reference,
)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)


def fast(main, aux, lam):
    g = gram([main, aux])
    c_m, c_a = agem_coefficients(g[0, 0], g[1, 0], lam=lam)
    return combine([c_m, c_a], [main, aux])


@SETTINGS
@given(pairs())
def test_equals_reference(case):
    main, aux, lam = case
    d = fast(main, aux, lam)
    assert all(t.dtype == m.dtype and t.shape == m.shape for t, m in zip(d, main))
    ref = agem_direction_reference(main, aux, lam=lam)
    # The removed component is at most lam ||g_a|| long, so rounding stays within
    # eps * (||g_m|| + lam ||g_a||).
    tol = budget(main[0].dtype, norm(main), 2 * lam * norm(aux))
    assert_vec_close(d, ref, tol, "A-GEM vs reference")


@SETTINGS
@given(pairs())
def test_main_loss_never_slower_than_alone(case):
    """``<d, g_m> >= ||g_m||^2`` (up to rounding): the main loss decreases at least as fast, to
    first order, as under its own gradient; with equality exactly when ``<g_a, g_m> <= 0``."""
    main, aux, lam = case
    d, m, a = flat(fast(main, aux, lam)), flat(main), flat(aux)
    mm, am = float(m @ m), float(a @ m)
    slack = rtol_for(main[0].dtype) * 20 * (norm(main) + lam * norm(aux)) * norm(main) + 1e-300
    assert float(d @ m) >= mm - slack
    expected = mm + lam * max(am, 0.0)  # the exact value of <d, g_m>
    assert abs(float(d @ m) - expected) <= slack


@SETTINGS
@given(pairs(zeros=False))
def test_mixed_without_conflict_and_projected_with_it(case):
    """``<g_a, g_m> >= 0``: Mixed exactly. ``< 0``: ``d - g_m`` is ``lam`` times ``g_a`` with its
    component along ``g_m`` removed, i.e. orthogonal to ``g_m``."""
    main, aux, lam = case
    m, a = flat(main), flat(aux)
    d = flat(fast(main, aux, lam))
    tol = budget(main[0].dtype, norm(main), 2 * lam * norm(aux))
    if float(a @ m) >= 0:
        assert_vec_close(d, m + lam * a, tol, "no conflict: Mixed")
    else:
        dev = float((d - m) @ m)
        assert abs(dev) <= tol * norm(main) + 1e-300, f"<d - g_m, g_m> = {dev:.3e}"


def test_zero_main_gradient_drops_the_projection():
    """``||g_m|| = 0``: nothing to protect, ``d = lam g_a`` (no 0/0)."""
    main = [torch.zeros(3)]
    aux = [torch.tensor([1.0, -2.0, 3.0])]
    d = fast(main, aux, 0.5)
    assert torch.equal(d[0], 0.5 * aux[0])


def test_known_value():
    """``g_m = (1, 0)``, ``g_a = (-1, 1)``, lam = 1: the aux gradient loses its ``-g_m`` part."""
    d = fast([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], 1.0)
    assert torch.equal(d[0], torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize(("kernel", "alias"), PATHS)
@SETTINGS
@given(case=pairs())
def test_contract_path_equals_reference(case, kernel, alias):
    """The fast path (the contract: one Gram pass, the formula, one combination pass; kernel or
    torch ops; into new tensors or into the aux list) equals the float64 reference."""
    main, aux, lam = case
    result = contract_step(AGEMFormula(), [main, aux], {"lam": lam}, kernel=kernel, alias=alias)
    assert all(t.dtype == m.dtype and t.shape == m.shape for t, m in zip(result.direction, main))
    ref = agem_direction_reference(main, aux, lam=lam)
    tol = budget(main[0].dtype, norm(main), 2 * lam * norm(aux))
    assert_vec_close(result.direction, ref, tol, "contract vs reference")
    assert bool(result.info["conflict"][0]) == (float(flat(aux) @ flat(main)) < 0)


def test_direction_function():
    d = agem_direction([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], lam=1.0)
    assert torch.equal(d[0], torch.tensor([1.0, 1.0]))


def test_several_aux_losses_rejected():
    with pytest.raises(ValueError, match="defined for one"):
        contract_step(
            AGEMFormula(), [[torch.ones(1)]] * 3, {"lam": [1.0, 1.0]}, kernel=False, alias=False
        )
