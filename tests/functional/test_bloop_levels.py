"""K-level Bloop and Mixed through the contract equal their float64 references (method.md s. 7).

Random gradient streams at scales 1e-10 .. 1e15, float32 and float64, both EMA orders, several
steps so that the EMAs evolve; through the torch-op path and, where the generic C kernel is
built, the kernel path. Then the properties of section 7 on random inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from _asserts import SCALES, dot, flat, norm, random_list, rtol_for
from torchbloop.functional import (
    BloopFormula,
    MixedFormula,
    SurgeryStep,
    bloop_direction,
    bloop_reference,
    mixed_reference,
)
from torchbloop.functional import contract as contract_module

SHAPES = [(5, 3), (), (7,), (0,), (2, 2, 2)]
LAMS = {1: [0.7], 2: [2.0, 0.3], 3: [0.5, 10.0, 1e-3]}
RHOS = {1: [0.1], 2: [0.2, 0.05], 3: [0.3, 1.0, 0.01]}


def kernel_built() -> bool:
    return contract_module._native_usable([[torch.zeros(4)]], 1, 1)


PATHS = [
    "torch-ops",
    pytest.param(
        "kernel",
        marks=pytest.mark.skipif(not kernel_built(), reason="generic C kernel not available"),
    ),
]


def _grads(k: int, scale: float, dtype: torch.dtype, seed: int) -> list[list[torch.Tensor]]:
    return [
        random_list(SHAPES, seed=seed + 101 * i, scale=scale, dtype=dtype) for i in range(k + 1)
    ]


def _step(formula, grads, emas, path, **kw):
    step = SurgeryStep(formula, grads, emas, kernel=path == "kernel", **kw)
    assert step.native == (path == "kernel")
    return step


def _tol(dtype: torch.dtype, grads, lam) -> float:
    size = norm(grads[0]) + sum(w * norm(g) for w, g in zip(lam, grads[1:]))
    return rtol_for(dtype) * 50 * size + 1e-300


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("scale", SCALES)
def test_k_level_bloop_stream_equals_reference(path, order, dtype, k, scale) -> None:
    lam, rho = LAMS[k], RHOS[k]
    emas: list[list[torch.Tensor]] | None = None
    for t in range(4):
        grads = _grads(k, scale, dtype, seed=17 * t + k)
        if emas is None:  # the lazy start (the surgeon's job): each EMA from its first gradient
            emas = [[x.clone() for x in grads[j]] for j in range(k)]
        ref = bloop_reference(grads, emas, lam=lam, rho=rho, ema_order=order)
        result = _step(
            BloopFormula(order), grads, emas, path, hyper={"lam": lam, "rho": rho}
        ).apply()
        tol = _tol(dtype, grads, lam)
        err = float((flat(result.direction) - flat(ref.direction)).norm())
        assert err <= tol, f"step {t}: direction error {err:.3e} > {tol:.3e}"
        for j in range(k):
            etol = rtol_for(dtype) * 10 * (norm(ref.emas[j]) + norm(grads[j])) + 1e-300
            assert float((flat(emas[j]) - flat(ref.emas[j])).norm()) <= etol
        assert torch.equal(result.info["skipped"].cpu(), ref.skipped)
        # inner products of float32 data may be summed in float32 (kernel lanes, CPU dots)
        rtol = rtol_for(dtype) * 50
        coef_scale = max(norm(g) for g in grads) / min(norm(e) for e in emas)
        assert torch.allclose(result.info["coef"].cpu(), ref.coef, rtol=0, atol=rtol * coef_scale)
        leak_scale = 1 + sum(w * norm(g) for w, g in zip(lam, grads[1:])) / norm(grads[0])
        assert torch.allclose(result.info["leak"].cpu(), ref.leak, rtol=0, atol=rtol * leak_scale)
        assert result.sq_norms is not None and result.sq_norms.shape == (k + 1,)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_level_mixed_equals_reference(path, dtype, k) -> None:
    grads = _grads(k, 3.0, dtype, seed=5)
    lam = LAMS[k]
    d = _step(MixedFormula(), grads, [], path, hyper={"lam": lam}).apply().direction
    ref = mixed_reference(grads, lam=lam)
    assert float((flat(d) - flat(ref)).norm()) <= _tol(dtype, grads, lam)


# --------------------------------------------------------------------------- properties


def _random_case(k: int, scale: float, dtype: torch.dtype, seed: int):
    grads = _grads(k, scale, dtype, seed)
    emas = [random_list(SHAPES, seed=seed + 7 + j, scale=scale, dtype=dtype) for j in range(k)]
    return grads, emas


def _direction(grads, emas, lam, order="paper", **kw):
    emas = [[e.clone() for e in x] for x in emas]
    step = SurgeryStep(BloopFormula(order), grads, emas, hyper={"lam": lam, "rho": 0.5}, **kw)
    return step.apply().direction


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_level_term_is_orthogonal_to_the_emas_above_it(dtype, k, scale, seed) -> None:
    grads, emas = _random_case(k, scale, dtype, seed)
    g0 = flat(grads[0])
    for level in range(1, k + 1):
        lam = [0.0] * k
        lam[level - 1] = 3.0
        term = flat(_direction(grads, emas, lam)) - g0  # = 3 P_level g_level
        for j in range(level):
            e = flat(emas[j])
            bound = (
                rtol_for(dtype) * 50 * float(term.norm() + 3 * norm(grads[level])) * float(e.norm())
            )
            assert abs(float(term @ e)) <= bound, f"level {level} vs e_{j}"
    # <d - g_0, e_0> = 0 with every level on
    d = flat(_direction(grads, emas, LAMS[k])) - g0
    e0 = flat(emas[0])
    size = sum(w * norm(g) for w, g in zip(LAMS[k], grads[1:]))
    assert abs(float(d @ e0)) <= rtol_for(dtype) * 50 * size * float(e0.norm())


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("level", [1, 2, 3])
def test_lam_zero_removes_its_level(k, level) -> None:
    if level > k:
        pytest.skip("no such level")
    grads, emas = _random_case(k, 1.0, torch.float64, seed=11)
    lam = list(LAMS[k])
    lam[level - 1] = 0.0
    other = [list(g) for g in grads]
    other[level] = random_list(SHAPES, seed=999, scale=5.0, dtype=torch.float64)
    a, b = flat(_direction(grads, emas, lam)), flat(_direction(other, emas, lam))
    assert float((a - b).norm()) <= 1e-12 * float(a.norm())


@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", SCALES)
def test_one_level_is_bloop(order, dtype, scale) -> None:
    grads, emas = _random_case(1, scale, dtype, seed=3)
    main, aux, ema = grads[0], grads[1], emas[0]
    seen = ema
    if order == "code":  # the code order projects on the updated EMA
        seen = [(0.5 * e.double() + 0.5 * m.double()).to(dtype) for e, m in zip(ema, main)]
    want = flat(bloop_direction(main, aux, seen, lam=0.7).direction)
    got = flat(_direction(grads, emas, [0.7], order))
    assert float((got - want).norm()) <= rtol_for(dtype) * 20 * (norm(main) + 0.7 * norm(aux))


def test_dependent_emas_add_no_direction() -> None:
    grads, emas = _random_case(3, 1.0, torch.float64, seed=4)
    emas[1] = [2.0 * e for e in emas[0]]  # exactly dependent
    step = SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": [1.0, 1.0, 1.0], "rho": 0.1})
    result = step.apply()
    assert result.info["skipped"][0].tolist() == [False, True, False]
    # Level 2 projects off span(e_0) only: as with one EMA.
    grads2, emas2 = _random_case(3, 1.0, torch.float64, seed=4)
    emas2[1] = [2.0 * e for e in emas2[0]]
    d_lvl2 = flat(_direction(grads2, emas2, [0.0, 1.0, 0.0])) - flat(grads2[0])
    e0 = flat(emas2[0])
    g2 = flat(grads2[2])
    want = g2 - (float(g2 @ e0) / float(e0 @ e0)) * e0
    assert float((d_lvl2 - want).norm()) <= 1e-12 * float(g2.norm())


def test_nearly_dependent_ema_is_skipped_by_the_relative_rank_test() -> None:
    """A residual of 1e-5 of the EMA's norm is below the rank test, at any scale."""
    for scale in (1e-10, 1.0, 1e15):
        grads, emas = _random_case(2, scale, torch.float64, seed=6)
        noise = random_list(SHAPES, seed=60, scale=scale * 1e-5, dtype=torch.float64)
        emas[1] = [e + n for e, n in zip(emas[0], noise)]
        result = SurgeryStep(
            BloopFormula(), grads, emas, hyper={"lam": [1.0, 1.0], "rho": 0.1}
        ).apply()
        assert result.info["skipped"][0].tolist() == [False, True]


def test_zero_and_non_finite_ema_norms_skip_their_level_without_epsilon() -> None:
    grads, emas = _random_case(2, 1.0, torch.float64, seed=8)
    emas[0] = [torch.zeros_like(e) for e in emas[0]]
    result = SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": [1.0, 1.0], "rho": 0.1}).apply()
    assert result.info["skipped"][0].tolist() == [True, False]
    assert all(torch.isfinite(d).all() for d in result.direction)
    grads, emas = _random_case(2, 1.0, torch.float64, seed=8)
    emas[0][0][0, 0] = 1e200  # ||e_0||^2 overflows float64: skipped, level 2 still exact
    result = SurgeryStep(
        BloopFormula(update_ema=False), grads, emas, hyper={"lam": [0.0, 1.0], "rho": 0.1}
    ).apply()
    assert result.info["skipped"][0].tolist() == [True, False]
    d = flat(result.direction) - flat(grads[0])
    e1 = flat(emas[1])
    assert abs(float(d @ e1)) <= 1e-12 * float(d.norm()) * float(e1.norm())


def test_leak_measures_how_much_of_the_main_descent_the_aux_term_takes() -> None:
    """leak = lam <P g_1, g_0> / ||g_0||^2: -1 when the aux term cancels g_0 along itself."""
    g0 = [torch.tensor([1.0, 0.0], dtype=torch.float64)]
    g1 = [torch.tensor([-1.0, 1.0], dtype=torch.float64)]
    e = [torch.tensor([0.0, 1.0], dtype=torch.float64)]  # an EMA orthogonal to g_0: no protection
    result = SurgeryStep(BloopFormula(), [g0, g1], [e], hyper={"lam": 1.0, "rho": 0.1}).apply()
    assert float(result.info["leak"][0, 0]) == pytest.approx(-1.0)
    e = [torch.tensor([1.0, 0.0], dtype=torch.float64)]  # aligned with g_0: no leak
    result = SurgeryStep(BloopFormula(), [g0, g1], [e], hyper={"lam": 1.0, "rho": 0.1}).apply()
    assert float(result.info["leak"][0, 0]) == 0.0
    zero = [torch.zeros(2, dtype=torch.float64)]
    result = SurgeryStep(BloopFormula(), [zero, g1], [e], hyper={"lam": 1.0, "rho": 0.1}).apply()
    assert float(result.info["leak"][0, 0]) == 0.0


def test_hyperparameters_are_checked_like_the_classes() -> None:
    grads, emas = _random_case(2, 1.0, torch.float64, seed=1)
    for hyper, error in [
        ({"lam": [1.0, -1.0], "rho": 0.1}, ValueError),
        ({"lam": [1.0, math.inf], "rho": 0.1}, ValueError),
        ({"lam": 1.0, "rho": 1.5}, ValueError),
        ({"lam": 1.0, "rho": 0.0}, ValueError),
        ({"lam": "1", "rho": 0.1}, TypeError),
        ({"lam": 1.0}, ValueError),
    ]:
        before = [flat(e).clone() for e in emas]
        with pytest.raises(error):
            SurgeryStep(BloopFormula(), grads, emas, hyper=hyper)
        assert all(torch.equal(flat(e), b) for e, b in zip(emas, before))
    with pytest.raises(ValueError, match="ema_order"):
        BloopFormula("later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="levels"):
        SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": [1.0, 1.0, 1.0], "rho": 0.1}).apply()


def test_state_sharing_a_gradient_is_rejected_when_written() -> None:
    grads, _ = _random_case(1, 1.0, torch.float64, seed=1)
    with pytest.raises(ValueError, match="shares tensors"):
        SurgeryStep(BloopFormula(), grads, [grads[0]], hyper={"lam": 1.0, "rho": 0.1})
    # read-only state may be a gradient (the full-batch rule, Eq. 3)
    SurgeryStep(
        BloopFormula(update_ema=False), grads, [grads[0]], hyper={"lam": 1.0, "rho": 0.1}
    ).apply()


def test_reference_leak_is_the_one_level_formula() -> None:
    """The reference's K = 1 leak is the classical formula (independent check)."""
    grads, emas = _random_case(1, 1.0, torch.float64, seed=2)
    ref = bloop_reference(grads, emas, lam=0.5, rho=0.1)
    g0, g1, e = flat(grads[0]), flat(grads[1]), flat(emas[0])
    pg = g1 - (float(g1 @ e) / float(e @ e)) * e
    assert float(ref.leak[0, 0]) == pytest.approx(0.5 * float(pg @ g0) / float(g0 @ g0))
    assert float(ref.coef[0, 0, 0]) == pytest.approx(dot(grads[1], emas[0]) / dot(emas[0], emas[0]))
