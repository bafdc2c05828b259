"""MetaBalance: per-tensor coefficients on per-tensor Gram entries against the float64 reference
over streams of steps (norm averages included), and the defining properties, on random inputs
(scales 1e-10..1e15, f32/f64)."""

from __future__ import annotations

import math

import pytest
import torch
from _method_props import (
    PATHS,
    assert_vec_close,
    budget,
    contract_step,
    pairs,
    random_list,
    rtol_for,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from torchbloop.functional.metabalance import (
    MetaBalanceFormula,
    metabalance_coefficients,
    metabalance_direction,
    metabalance_direction_reference,
)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)
RS = (0.0, 0.3, 0.7, 1.0)
BETAS = (0.0, 0.5, 0.9)


def per_tensor_gram(main, aux):
    acc = torch.float64 if main[0].dtype == torch.float64 else torch.float32
    mm = torch.stack([(m.to(acc) * m.to(acc)).sum() for m in main])
    aa = torch.stack([(a.to(acc) * a.to(acc)).sum() for a in aux])
    return mm, aa


def fast(main, aux, state, r, beta):
    """One step: per tensor (block) ``d_t = c_m g_m + c_a g_a``; returns ``(d, new state)``."""
    mm, aa = per_tensor_gram(main, aux)
    c = metabalance_coefficients(mm, aa, state[0], state[1], r=r, beta=beta)
    d = [(c.c_main[i] * m + c.c_aux[i] * a).to(m.dtype) for i, (m, a) in enumerate(zip(main, aux))]
    return d, (c.norm_main, c.norm_aux), c


def tensor_budget(main, aux, c_aux, dtype) -> float:
    return sum(
        budget(dtype, float(m.double().norm()), float(ca) * float(a.double().norm()))
        for m, a, ca in zip(main, aux, c_aux)
    )


@SETTINGS
@given(
    seed=st.integers(0, 2**20),
    dtype=st.sampled_from((torch.float32, torch.float64)),
    scale=st.sampled_from((1e-10, 1e-5, 1.0, 1e5, 1e15)),
    ratio=st.sampled_from((1e-3, 1.0, 1e3)),
    r=st.sampled_from(RS),
    beta=st.sampled_from(BETAS),
)
def test_stream_equals_reference(seed, dtype, scale, ratio, r, beta):
    """Four steps from zero averages, one tensor's aux gradient zero at the first step."""
    shapes = ((3, 4), (4,), (), (2, 2))
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    state = (torch.zeros(len(shapes), dtype=acc), torch.zeros(len(shapes), dtype=acc))
    ref_state = [(0.0, 0.0)] * len(shapes)
    for step in range(4):
        main = random_list(shapes, seed=seed + 2 * step, scale=scale, dtype=dtype)
        aux = random_list(shapes, seed=seed + 2 * step + 1, scale=scale * ratio, dtype=dtype)
        if step == 0:
            aux[1] = torch.zeros_like(aux[1])
        d, state, c = fast(main, aux, state, r, beta)
        ref, ref_state = metabalance_direction_reference(main, aux, norms=ref_state, r=r, beta=beta)
        assert_vec_close(d, ref, tensor_budget(main, aux, c.c_aux, dtype), f"step {step}")
        for i, (m_m, m_a) in enumerate(ref_state):
            tol = 20 * rtol_for(dtype)
            assert math.isclose(float(state[0][i]), m_m, rel_tol=tol, abs_tol=1e-300), (step, i)
            assert math.isclose(float(state[1][i]), m_a, rel_tol=tol, abs_tol=1e-300), (step, i)


@SETTINGS
@given(case=pairs(zeros=False), r=st.sampled_from(RS), beta=st.sampled_from(BETAS))
def test_first_step_aux_norm_is_the_relaxed_main_norm(case, r, beta):
    """From zero averages, ``m_m / m_a = ||g_m|| / ||g_a||`` per tensor, so the aux term's norm
    is ``r ||g_m,t|| + (1 - r) ||g_a,t||`` for every tensor: ``r = 1`` gives the aux gradient the
    main one's magnitude, ``r = 0`` leaves it (Mixed with weight 1)."""
    main, aux, _ = case
    acc = torch.float64 if main[0].dtype == torch.float64 else torch.float32
    zeros = torch.zeros(len(main), dtype=acc)
    d, _, _ = fast(main, aux, (zeros, zeros), r, beta)
    for m, a, dt in zip(main, aux, d):
        n_m, n_a = float(m.double().norm()), float(a.double().norm())
        if n_a == 0.0:
            continue
        aux_term = float((dt.double() - m.double()).norm())
        expected = r * n_m + (1 - r) * n_a
        tol = budget(m.dtype, n_m, expected, factor=20)
        assert abs(aux_term - expected) <= tol, (aux_term, expected, tol)


@SETTINGS
@given(case=pairs(zeros=False), r=st.sampled_from(RS))
def test_aux_norm_follows_the_averages(case, r):
    """With given averages ``(m_m, m_a)`` (after this step's update), the aux term of every
    tensor is ``(r m_m / m_a + 1 - r) g_a``: its direction is ``g_a``'s and its norm
    ``r (m_m / m_a) ||g_a|| + (1 - r) ||g_a||``."""
    main, aux, _ = case
    acc = torch.float64 if main[0].dtype == torch.float64 else torch.float32
    n = len(main)
    gen = torch.Generator().manual_seed(1)
    prev = (
        torch.rand(n, generator=gen, dtype=torch.float64).to(acc) * 3,
        torch.rand(n, generator=gen, dtype=torch.float64).to(acc) + 0.1,
    )
    d, (m_m, m_a), _ = fast(main, aux, prev, r, 0.9)
    for i, (m, a, dt) in enumerate(zip(main, aux, d)):
        coef = r * float(m_m[i]) / float(m_a[i]) + (1 - r)
        tol = budget(m.dtype, float(m.double().norm()), coef * float(a.double().norm()), factor=20)
        assert_vec_close(
            (dt.double() - m.double()).reshape(-1),
            (coef * a.double()).reshape(-1),
            tol,
            f"tensor {i}",
        )


def test_zero_aux_average_drops_the_ratio():
    """An aux average of 0 (its gradient has been zero so far) drops ``r m_m / m_a``; no NaN."""
    z = torch.zeros(1)
    c = metabalance_coefficients(torch.tensor([4.0]), z, z, z, r=0.7, beta=0.9)
    assert torch.allclose(c.c_aux, torch.tensor([0.3])) and torch.isfinite(c.c_aux).all()


@pytest.mark.parametrize(("kernel", "alias"), PATHS)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**20),
    dtype=st.sampled_from((torch.float32, torch.float64)),
    scale=st.sampled_from((1e-10, 1.0, 1e15)),
    r=st.sampled_from(RS),
    beta=st.sampled_from(BETAS),
)
def test_contract_stream_equals_reference(seed, dtype, scale, r, beta, kernel, alias):
    """Three steps through the contract (per-tensor Gram blocks; the averages enter as
    hyperparameters and leave in ``info``) equal the float64 reference, directions and state."""
    shapes = ((3, 4), (4,), (), (2, 2))
    n = len(shapes)
    norms = (torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64))
    ref_state = [(0.0, 0.0)] * n
    for step in range(3):
        main = random_list(shapes, seed=seed + 2 * step, scale=scale, dtype=dtype)
        aux = random_list(shapes, seed=seed + 2 * step + 1, scale=scale * 10, dtype=dtype)
        hyper = {"r": r, "beta": beta, "norm_main": norms[0], "norm_aux": norms[1]}
        result = contract_step(
            MetaBalanceFormula(),
            [main, aux],
            hyper,
            kernel=kernel,
            alias=alias,
            gram_blocks="tensor",
            coef_blocks=list(range(n)),
        )
        ref, ref_state = metabalance_direction_reference(main, aux, norms=ref_state, r=r, beta=beta)
        c_aux = result.info["c_aux"]
        assert_vec_close(result.direction, ref, tensor_budget(main, aux, c_aux, dtype), f"{step}")
        norms = (result.info["norm_main"], result.info["norm_aux"])
        for i, (m_m, m_a) in enumerate(ref_state):
            tol = 20 * rtol_for(dtype)  # the Gram holds the inputs' rounding
            assert math.isclose(float(norms[0][i]), m_m, rel_tol=tol, abs_tol=1e-300)
            assert math.isclose(float(norms[1][i]), m_a, rel_tol=tol, abs_tol=1e-300)


def test_direction_function():
    z = torch.zeros(2)
    r = metabalance_direction(
        [torch.tensor([3.0, 4.0]), torch.tensor([1.0])],
        [torch.tensor([1.0, 0.0]), torch.tensor([2.0])],
        norm_main=z,
        norm_aux=z,
        r=1.0,
    )
    assert torch.equal(r.direction[0], torch.tensor([8.0, 4.0]))
    assert torch.equal(r.direction[1], torch.tensor([2.0]))  # aux rescaled to ||g_m|| = 1
    assert torch.allclose(r.norm_main, torch.tensor([0.5, 0.1], dtype=torch.float64))
