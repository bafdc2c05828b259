"""Bloop's per-step diagnostics: hand-computed values, and no effect on the directions."""

from __future__ import annotations

import math

import pytest
import torch

from _asserts import flat
from torchbloop import Bloop, BloopDiagnostics


def _grads(step: int):
    gen = torch.Generator().manual_seed(step)
    main = [
        torch.randn(3, 2, generator=gen, dtype=torch.float64),
        torch.randn((), generator=gen, dtype=torch.float64),
    ]
    aux = [
        torch.randn(3, 2, generator=gen, dtype=torch.float64),
        torch.randn((), generator=gen, dtype=torch.float64),
    ]
    return main, aux


def _params():
    return [
        torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros((), dtype=torch.float64)),
    ]


@pytest.mark.parametrize("order", ["paper", "code"])
def test_diagnostics_match_hand_computed_values(order):
    rho = 0.3
    surgeon = Bloop(_params(), lam=0.4, rho=rho, ema_order=order, diagnostics=True)
    assert surgeon.diagnostics is None
    e = None
    for step in range(5):
        main, aux = _grads(step)
        m, a = flat(main), flat(aux)
        if e is None:
            e = m.clone()
        if order == "code":
            e = (1 - rho) * e + rho * m
        surgeon.combine(main, aux)
        diag = surgeon.diagnostics
        assert isinstance(diag, BloopDiagnostics)
        cos_main = float(m @ e) / math.sqrt(float(m @ m) * float(e @ e))
        cos_aux = float(a @ e) / math.sqrt(float(a @ a) * float(e @ e))
        assert float(diag.cos_main_ema) == pytest.approx(cos_main, rel=1e-12)
        assert float(diag.coef) == pytest.approx(float(a @ e) / float(e @ e), rel=1e-12)
        assert float(diag.removed_fraction) == pytest.approx(cos_aux**2, rel=1e-12)
        assert not bool(diag.skipped)
        assert all(t.dim() == 0 for t in diag)
        if order == "paper":
            e = (1 - rho) * e + rho * m
    # On the first step the EMA is the main gradient itself: cosine 1 (checked on a fresh one).
    fresh = Bloop(_params(), lam=0.4, diagnostics=True)
    fresh.combine(*_grads(0))
    assert float(fresh.diagnostics.cos_main_ema) == pytest.approx(1.0, rel=1e-12)


def test_diagnostics_report_a_skipped_projection():
    surgeon = Bloop(_params(), lam=1.0, rho=0.5, diagnostics=True)
    zeros = [torch.zeros(3, 2, dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
    _, aux = _grads(1)
    out = surgeon.combine(zeros, aux)  # the EMA starts at zero: nothing to project on
    diag = surgeon.diagnostics
    assert bool(diag.skipped)
    assert float(diag.coef) == 0.0 and float(diag.removed_fraction) == 0.0
    assert torch.equal(flat(out), flat(aux))  # Mixed with a zero main gradient and lam=1


@pytest.mark.parametrize("order", ["paper", "code"])
def test_diagnostics_change_no_direction(order):
    with_diag = Bloop(_params(), lam=0.7, rho=0.2, ema_order=order, diagnostics=True)
    without = Bloop(_params(), lam=0.7, rho=0.2, ema_order=order)
    for step in range(4):
        main, aux = _grads(step)
        a = with_diag.combine(main, aux)
        b = without.combine(main, aux)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert without.diagnostics is None
    assert all(torch.equal(x, y) for x, y in zip(with_diag.ema, without.ema))


def test_diagnostics_in_float32_at_large_scale():
    """cos(g_main, e) must not overflow in float32 when ||g||^2 ||e||^2 exceeds its range."""
    params = [torch.nn.Parameter(torch.zeros(4))]
    surgeon = Bloop(params, lam=1.0, rho=0.5, diagnostics=True)
    main = [torch.tensor([1e10, 2e10, -1e10, 0.5e10])]
    aux = [torch.tensor([1e10, 0.0, 1e10, 0.0])]
    surgeon.combine(main, aux)
    assert float(surgeon.diagnostics.cos_main_ema) == pytest.approx(1.0, rel=1e-5)
    assert not bool(surgeon.diagnostics.skipped)


def test_diagnostics_in_float32_at_small_scale():
    """... nor underflow when ||g||^2 ||e||^2 is below float32's smallest normal number."""
    params = [torch.nn.Parameter(torch.zeros(4))]
    surgeon = Bloop(params, lam=1.0, rho=0.5, diagnostics=True)
    main = [torch.tensor([1e-12, 2e-12, -1e-12, 0.5e-12])]
    surgeon.combine(main, [torch.tensor([1e-12, 0.0, 1e-12, 0.0])])
    assert float(surgeon.diagnostics.cos_main_ema) == pytest.approx(1.0, rel=1e-5)
