"""The original Dynamic Barrier: the coefficients on the Gram entries (and the main loss value)
against the float64 reference, and the defining properties, on random inputs (scales
1e-10..1e15, f32/f64, loss values from 0 to 1e30)."""

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
from hypothesis import strategies as st

from torchbloop.functional.original_dynamic_barrier import (
    OriginalDynamicBarrierFormula,
    original_dynamic_barrier_coefficients,
    original_dynamic_barrier_direction,
    original_dynamic_barrier_direction_reference,
)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)
LOSSES = (0.0, 1e-20, 1e-3, 1.0, 1e3, 1e30)
HYPER = st.fixed_dictionaries(
    {
        "alpha": st.sampled_from((1e-3, 1.0, 10.0)),
        "beta": st.sampled_from((1e-3, 1.0, 10.0)),
        "lower_bound": st.sampled_from((0.0, 0.5, -1.0)),
    }
)


def fast(main, aux, loss, hyper):
    g = gram([main, aux])
    c_m, c_a = original_dynamic_barrier_coefficients(
        g[0, 0], g[1, 0], torch.tensor(loss, dtype=main[0].dtype), **hyper
    )
    return combine([c_m, c_a], [main, aux])


def direction_budget(main, aux, hyper) -> float:
    """``|c_m| ||g_m|| <= beta ||g_m|| + ||g_a||`` (``phi <= beta ||g_m||^2``; for negative
    ``phi`` the coefficient is at most ``|<g_a, g_m>| / ||g_m||^2``)."""
    return budget(main[0].dtype, 2 * norm(aux), hyper["beta"] * norm(main))


@SETTINGS
@given(case=pairs(), loss=st.sampled_from(LOSSES), hyper=HYPER)
def test_equals_reference(case, loss, hyper):
    main, aux, _ = case
    loss32 = float(torch.tensor(loss, dtype=main[0].dtype))  # the loss as the fast path sees it
    d = fast(main, aux, loss, hyper)
    ref = original_dynamic_barrier_direction_reference(main, aux, main_loss=loss32, **hyper)
    assert_vec_close(d, ref, direction_budget(main, aux, hyper), "vs reference")


@SETTINGS
@given(case=pairs(), loss=st.sampled_from(LOSSES), hyper=HYPER)
def test_barrier_holds(case, loss, hyper):
    """``<d, g_m> = max(<g_a, g_m>, phi) >= phi`` with ``phi = min(alpha (L - L_low),
    beta ||g_m||^2)`` whenever ``g_m != 0`` (the constraint is feasible); ``d = g_a`` when the
    aux gradient already satisfies it, and when ``g_m = 0``."""
    main, aux, _ = case
    m, a = flat(main), flat(aux)
    mm, am = float(m @ m), float(a @ m)
    loss32 = float(torch.tensor(loss, dtype=main[0].dtype))
    d = flat(fast(main, aux, loss, hyper))
    tol = direction_budget(main, aux, hyper)
    if mm == 0.0:
        assert_vec_close(d, a, tol, "g_m = 0: d = g_a")
        return
    phi = min(hyper["alpha"] * (loss32 - hyper["lower_bound"]), hyper["beta"] * mm)
    slack = tol * norm(main) + 10 * rtol_for(main[0].dtype) * abs(phi)
    assert float(d @ m) >= phi - slack
    assert abs(float(d @ m) - max(am, phi)) <= slack + 10 * rtol_for(main[0].dtype) * abs(am)
    if am >= phi + slack:
        assert_vec_close(d, a, tol, "inactive barrier: d = g_a")


def test_known_value():
    """``g_m = (1, 0)``, ``g_a = (-1, 1)``, L = 0.5: ``phi = min(0.5, 1) = 0.5``, so ``d = g_a +
    1.5 g_m`` and ``<d, g_m> = 0.5``."""
    d = fast([torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])], 0.5, {})
    assert torch.equal(d[0], torch.tensor([0.5, 1.0]))


def test_main_loss_is_not_synchronised():
    """The loss value enters as a tensor (a graph-carrying loss is detached, never ``.item()``)."""
    w = torch.tensor(2.0, requires_grad=True)
    loss = w * w
    c_m, _ = original_dynamic_barrier_coefficients(torch.tensor(1.0), torch.tensor(0.0), loss)
    assert not c_m.requires_grad and math.isclose(float(c_m), 1.0)


@pytest.mark.parametrize(("kernel", "alias"), PATHS)
@SETTINGS
@given(case=pairs(), loss=st.sampled_from(LOSSES), hyper=HYPER)
def test_contract_path_equals_reference(case, loss, hyper, kernel, alias):
    """The fast path (the contract; the loss value enters as a 0-dim tensor hyperparameter)
    equals the float64 reference."""
    main, aux, _ = case
    loss_t = torch.tensor(loss, dtype=main[0].dtype)
    full = {**hyper, "main_loss": loss_t}
    formula = OriginalDynamicBarrierFormula()
    result = contract_step(formula, [main, aux], full, kernel=kernel, alias=alias)
    ref = original_dynamic_barrier_direction_reference(main, aux, main_loss=float(loss_t), **hyper)
    assert_vec_close(result.direction, ref, direction_budget(main, aux, hyper), "vs reference")


def test_direction_function_and_missing_loss():
    m, a = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
    d = original_dynamic_barrier_direction(m, a, main_loss=torch.tensor(0.5))
    assert torch.equal(d[0], torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="main loss"):
        contract_step(
            OriginalDynamicBarrierFormula(),
            [m, a],
            {"alpha": 1.0, "beta": 1.0, "lower_bound": 0.0},
            kernel=False,
            alias=False,
        )
