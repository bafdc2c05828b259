"""GradVac (aux adjusted toward the main): the coefficients on the Gram entries against the
float64 reference over streams of steps (state included), and the defining properties, on random
inputs (scales 1e-10..1e15, f32/f64)."""

from __future__ import annotations

import math

import pytest
import torch
from _method_props import (
    PATHS,
    UNIT_ROUNDOFF,
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
from hypothesis import strategies as st

from torchbloop.functional.gradvac import (
    DEFAULT_BETA,
    GradVacFormula,
    gradvac_coefficients,
    gradvac_direction,
    gradvac_direction_reference,
)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)
TARGETS = (-0.9, -0.3, 0.0, 0.2, 0.6, 0.95)
BETAS = (DEFAULT_BETA, 0.5, 1.0)


def fast(main, aux, lam, phi_hat, beta):
    g = gram([main, aux])
    c = gradvac_coefficients(
        g[0, 0], g[1, 0], g[1, 1], torch.tensor(phi_hat, dtype=g.dtype), lam=lam, beta=beta
    )
    return combine([c.c_main, c.c_aux], [main, aux]), c


def _cos(x, y) -> float:
    den = float(x.norm()) * float(y.norm())
    return max(-1.0, min(1.0, float(x @ y) / den)) if den > 0 else 0.0


def direction_budget(main, aux, lam, phi_hat) -> float:
    """Rounding budget of one step. ``|w| ||g_m|| <= ||g_a|| (1 + 1/s_hat)``; and where
    ``|phi|`` is near 1 the factor ``sqrt(1 - phi^2)`` has an infinite slope, so an error
    ``delta`` in ``phi`` moves it by up to ``sqrt(2 delta)`` (times ``|phi_hat| ||g_a|| / s_hat``)."""
    dtype = main[0].dtype
    s_hat = math.sqrt(max(0.0, 1.0 - phi_hat**2))
    phi = _cos(flat(aux), flat(main))
    s_phi = math.sqrt(max(0.0, 1.0 - phi**2))
    delta = 200 * UNIT_ROUNDOFF[dtype]
    ds = min(math.sqrt(2 * delta), delta / s_phi if s_phi > 0 else math.inf)
    kink = lam * norm(aux) * abs(phi_hat) / s_hat * ds if s_hat > 0 else 0.0
    return budget(dtype, norm(main), lam * norm(aux) * (2 + 1 / max(s_hat, 1e-300))) + 2 * kink


@SETTINGS
@given(case=pairs(), phi_hat=st.sampled_from(TARGETS), beta=st.sampled_from(BETAS))
def test_one_step_equals_reference(case, phi_hat, beta):
    main, aux, lam = case
    d, c = fast(main, aux, lam, phi_hat, beta)
    ref, ref_hat = gradvac_direction_reference(main, aux, lam=lam, phi_hat=phi_hat, beta=beta)
    assert_vec_close(d, ref, direction_budget(main, aux, lam, phi_hat), "GradVac vs reference")
    assert math.isclose(float(c.phi_hat), ref_hat, abs_tol=100 * rtol_for(main[0].dtype))


@SETTINGS
@given(
    seed=st.integers(0, 2**20),
    dtype=st.sampled_from((torch.float32, torch.float64)),
    scale=st.sampled_from((1e-10, 1.0, 1e15)),
    beta=st.sampled_from(BETAS),
)
def test_stream_equals_reference(seed, dtype, scale, beta):
    """Five steps from ``phi_hat = 0``: the target cosine carried by the coefficient function
    stays equal to the reference's, and so do the directions."""
    from _method_props import random_list

    shapes = ((4, 3), (5,))
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(17, generator=gen, dtype=torch.float64)  # correlated gradients
    hat_fast = torch.zeros((), dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    hat_ref = 0.0
    for step in range(5):
        noise_m = random_list(shapes, seed=seed + 2 * step, scale=1.0, dtype=torch.float64)
        noise_a = random_list(shapes, seed=seed + 2 * step + 1, scale=1.0, dtype=torch.float64)
        main = [
            ((n + s) * scale).to(dtype)
            for n, s in zip(noise_m, (shared[:12].view(4, 3), shared[12:]))
        ]
        aux = [
            ((n + s) * scale).to(dtype)
            for n, s in zip(noise_a, (shared[:12].view(4, 3), shared[12:]))
        ]
        g = gram([main, aux])
        c = gradvac_coefficients(g[0, 0], g[1, 0], g[1, 1], hat_fast, lam=1.0, beta=beta)
        d = combine([c.c_main, c.c_aux], [main, aux])
        ref, new_ref = gradvac_direction_reference(main, aux, lam=1.0, phi_hat=hat_ref, beta=beta)
        assert_vec_close(d, ref, direction_budget(main, aux, 1.0, hat_ref), f"step {step}")
        hat_fast, hat_ref = c.phi_hat, new_ref
        assert math.isclose(float(hat_fast), hat_ref, abs_tol=100 * rtol_for(dtype)), step


@SETTINGS
@given(case=pairs(zeros=False), phi_hat=st.sampled_from(TARGETS))
def test_adjusted_cosine_reaches_the_target(case, phi_hat):
    """With ``phi = cos(g_a, g_m) < phi_hat`` the adjusted aux gradient ``g_a'`` (``d - g_m`` at
    lam = 1) has ``cos(g_a', g_m) = phi_hat`` (so ``>= phi_hat``); otherwise ``g_a' = g_a``.
    (``g_a`` anti-parallel to ``g_m`` cannot be rotated along ``g_m``: excluded, see below.)"""
    main, aux, _ = case
    m, a = flat(main), flat(aux)
    phi = _cos(a, m)
    s_phi = math.sqrt(max(0.0, 1.0 - phi**2))
    if s_phi < 1e-2:
        return
    d, c = fast(main, aux, 1.0, phi_hat, DEFAULT_BETA)
    adjusted = flat(d) - flat(main).to(flat(d).dtype)
    if phi < phi_hat:
        assert bool(c.adjusted)
        s_hat = math.sqrt(1.0 - phi_hat**2)
        tol = 10 * rtol_for(main[0].dtype) * (1 + 1 / (s_phi * s_hat))
        got = _cos(adjusted, m)
        assert got >= phi_hat - tol and abs(got - phi_hat) <= tol, (got, phi_hat, tol)
    else:
        assert not bool(c.adjusted)
        assert_vec_close(adjusted, a, budget(main[0].dtype, norm(main), norm(aux)), "unchanged")


def test_target_update_is_the_ema_of_the_cosine():
    """``phi_hat <- (1 - beta) phi_hat + beta phi`` with ``phi`` the cosine BEFORE adjustment;
    a zero gradient has cosine 0 (and no adjustment)."""
    m = [torch.tensor([1.0, 0.0], dtype=torch.float64)]
    a = [torch.tensor([1.0, 1.0], dtype=torch.float64)]
    _, c = fast(m, a, 1.0, 0.9, 0.5)
    assert math.isclose(float(c.phi_hat), 0.5 * 0.9 + 0.5 / math.sqrt(2), rel_tol=1e-15)
    d, c = fast(m, [torch.zeros(2, dtype=torch.float64)], 1.0, 0.9, 0.5)
    assert float(c.phi_hat) == 0.45 and torch.equal(d[0], m[0])
    d, c = fast([torch.zeros(2, dtype=torch.float64)], a, 2.0, 0.9, 0.5)
    assert torch.equal(d[0], 2.0 * a[0]) and not bool(c.adjusted)


def test_target_one_drops_the_adjustment():
    """``phi_hat = 1`` would divide by ``sqrt(1 - phi_hat^2) = 0``: the adjustment is dropped."""
    m = [torch.tensor([1.0, 0.0])]
    a = [torch.tensor([0.0, 1.0])]
    d, c = fast(m, a, 1.0, 1.0, 0.5)
    assert torch.equal(d[0], torch.tensor([1.0, 1.0])) and not bool(c.adjusted)


@pytest.mark.parametrize(("kernel", "alias"), PATHS)
@SETTINGS
@given(case=pairs(), phi_hat=st.sampled_from(TARGETS), beta=st.sampled_from(BETAS))
def test_contract_path_equals_reference(case, phi_hat, beta, kernel, alias):
    """The fast path (the contract: the target enters as a hyperparameter, the new one leaves in
    ``info``) equals the float64 reference, direction and new target."""
    main, aux, lam = case
    hyper = {"lam": lam, "beta": beta, "phi_hat": torch.tensor(phi_hat, dtype=torch.float64)}
    result = contract_step(GradVacFormula(), [main, aux], hyper, kernel=kernel, alias=alias)
    ref, ref_hat = gradvac_direction_reference(main, aux, lam=lam, phi_hat=phi_hat, beta=beta)
    assert_vec_close(result.direction, ref, direction_budget(main, aux, lam, phi_hat), "vs ref")
    assert math.isclose(
        float(result.info["phi_hat"][0]), ref_hat, abs_tol=100 * rtol_for(main[0].dtype)
    )


def test_direction_function_carries_the_target():
    """Three steps of :func:`gradvac_direction` feeding back its target equal the reference."""
    gen = torch.Generator().manual_seed(5)
    hat, hat_ref = torch.zeros((), dtype=torch.float64), 0.0
    for _ in range(3):
        m = [torch.randn(4, generator=gen, dtype=torch.float64)]
        a = [torch.randn(4, generator=gen, dtype=torch.float64) - m[0]]
        r = gradvac_direction(m, a, lam=0.5, phi_hat=hat, beta=0.3)
        ref, hat_ref = gradvac_direction_reference(m, a, lam=0.5, phi_hat=hat_ref, beta=0.3)
        assert_vec_close(r.direction, ref, 1e-13, "step")
        hat = r.phi_hat.reshape(())
        assert math.isclose(float(hat), hat_ref, abs_tol=1e-15)
