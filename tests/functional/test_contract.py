"""The surgery contract itself: blocks, aliasing of ``out``, finiteness, tiny gradients, reduce."""

from __future__ import annotations

import math

import pytest
import torch

from _asserts import flat, norm, random_list, rtol_for
from torchbloop.functional import (
    BloopFormula,
    DynamicBarrierFormula,
    MixedFormula,
    PCGradFormula,
    SurgeryStep,
    bloop_direction,
    bloop_reference,
    bloop_update_reference,
    contract,
    mixed_reference,
)
from torchbloop.functional.bloop import _orthonormalise

SHAPES = [(4, 3), (6,), (), (2, 5), (3,)]
GROUPS = [0, 0, 1, 2, 1]


def _lists(n: int, dtype=torch.float64, scale=1.0, seed=0) -> list[list[torch.Tensor]]:
    return [random_list(SHAPES, seed=seed + 31 * i, scale=scale, dtype=dtype) for i in range(n)]


def _clone(xs):
    return [[t.clone() for t in x] for x in xs]


def _err(a, b) -> float:
    return float((flat(a) - flat(b)).norm())


@pytest.fixture
def torch_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forces the torch-op path (the C kernel's eligibility check says no)."""
    monkeypatch.setattr(contract, "_native_usable", lambda *args: False)


@pytest.fixture(params=["kernel", "torch-ops"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on both paths (the kernel one where the C kernel is built)."""
    if request.param == "torch-ops":
        monkeypatch.setattr(contract, "_native_usable", lambda *args: False)
    elif not contract._native_usable([[torch.zeros(2)]], 1, 1):
        pytest.skip("C kernel not available")
    return str(request.param)


# --------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize("blocks", ["tensor", "group", [1, 0, 1, 0, 0]])
@pytest.mark.parametrize("k", [1, 2])
def test_block_gram_equals_reference(order, blocks, k, path) -> None:
    grads, emas = _lists(k + 1, seed=1), _lists(k, seed=2)
    ids = list(range(5)) if blocks == "tensor" else GROUPS if blocks == "group" else blocks
    lam, rho = [0.8, 3.0][:k], [0.3, 0.6][:k]
    ref = bloop_reference(grads, emas, lam=lam, rho=rho, ema_order=order, gram_blocks=ids)
    # with coef_blocks, a sequence is one value per block: the same levels for each group
    step = SurgeryStep(
        BloopFormula(order),
        grads,
        emas,
        hyper={"lam": [lam] * 3, "rho": [rho] * 3},
        gram_blocks=blocks,
        coef_blocks=GROUPS,
    )
    result = step.apply()
    assert _err(result.direction, ref.direction) <= 1e-12 * norm(grads[0]) * 10
    for e, want in zip(emas, ref.emas):
        assert _err(e, want) <= 1e-12 * norm(want)
    assert step.gram().shape[0] == max(ids) + 1


@pytest.mark.parametrize("blocks", [None, "group", "tensor"])
def test_per_group_lam_and_rho_equal_reference(blocks, path) -> None:
    grads, emas = _lists(3, seed=3), _lists(2, seed=4)
    lam = [[0.5, 1.0], [0.0, 0.0], [2.0, 0.1]]  # group 1 excluded (lam = 0)
    rho = [0.1, 0.5, 1.0]
    ids = {None: None, "group": GROUPS, "tensor": list(range(5))}[blocks]
    ref = bloop_reference(grads, emas, lam=lam, rho=rho, gram_blocks=ids, coef_blocks=GROUPS)
    result = SurgeryStep(
        BloopFormula(),
        grads,
        emas,
        hyper={"lam": lam, "rho": rho},
        gram_blocks=blocks,
        coef_blocks=GROUPS,
    ).apply()
    assert _err(result.direction, ref.direction) <= 1e-12 * norm(grads[0]) * 10
    for e, want in zip(emas, ref.emas):
        assert _err(e, want) <= 1e-12 * norm(want)
    # the excluded group's tensors are exactly g_0
    for t, group in enumerate(GROUPS):
        if group == 1:
            assert torch.equal(result.direction[t], grads[0][t])


def test_code_order_needs_one_rho_per_gram_block() -> None:
    grads, emas = _lists(2, seed=3), _lists(1, seed=4)
    with pytest.raises(ValueError, match="rho"):
        SurgeryStep(
            BloopFormula("code"),
            grads,
            emas,
            hyper={"lam": 1.0, "rho": [0.1, 0.2, 0.1]},
            coef_blocks=GROUPS,
        )
    # equal values per Gram block are fine, and so are per-group Gram blocks
    SurgeryStep(
        BloopFormula("code"),
        grads,
        emas,
        hyper={"lam": 1.0, "rho": [0.1, 0.1, 0.1]},
        coef_blocks=GROUPS,
    )
    SurgeryStep(
        BloopFormula("code"),
        grads,
        emas,
        hyper={"lam": 1.0, "rho": [0.1, 0.2, 0.1]},
        coef_blocks=GROUPS,
        gram_blocks="group",
    )


def test_mixed_per_group_lam(path) -> None:
    grads = _lists(3, seed=5)
    lam = [[1.0, 2.0], [0.0, 0.5], [3.0, 0.0]]
    d = SurgeryStep(MixedFormula(), grads, [], hyper={"lam": lam}, coef_blocks=GROUPS).apply()
    for t, group in enumerate(GROUPS):
        want = mixed_reference([[g[t]] for g in grads], lam=lam[group])
        assert torch.allclose(d.direction[t], want[0], rtol=1e-14, atol=1e-14)


def test_bad_blocks_are_rejected() -> None:
    grads = _lists(2)
    for blocks, match in [
        ("layer", "gram_blocks"),
        ([0, 1], "block ids"),
        ([0, 0, 0, 0, -1], "block ids"),
    ]:
        with pytest.raises(ValueError, match=match):
            SurgeryStep(MixedFormula(), grads, [], hyper={"lam": 1.0}, gram_blocks=blocks)
    with pytest.raises(ValueError, match="per-block values"):
        SurgeryStep(MixedFormula(), grads, [], hyper={"lam": [1.0, 2.0]}, coef_blocks=GROUPS)


# --------------------------------------------------------------------------- aliasing


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("out", ["none", "main", "aux", "fresh"])
@pytest.mark.parametrize("order", ["paper", "code"])
def test_out_may_alias_any_gradient(order, out, foreach, path) -> None:
    """out = g_0 makes a cycle with the EMA update (each overwrites what the other reads)."""
    main, aux, ema = _lists(3, dtype=torch.float32, seed=6)
    want_d, want_e = bloop_update_reference(main, aux, ema, lam=0.6, rho=0.2, ema_order=order)
    m, a, e = _clone([main, aux, ema])
    target = {"none": None, "main": m, "aux": a, "fresh": [torch.zeros_like(t) for t in main]}[out]
    result = SurgeryStep(
        BloopFormula(order),
        [m, a],
        [e],
        hyper={"lam": 0.6, "rho": 0.2},
        out=target,
        foreach=foreach,
    ).apply()
    if target is not None:
        assert all(x is y for x, y in zip(result.direction, target))
    tol = rtol_for(torch.float32) * 10 * (norm(main) + norm(aux))
    assert _err(result.direction, want_d) <= tol
    assert _err(e, want_e) <= tol
    if out != "main":
        assert all(torch.equal(x, y) for x, y in zip(m, main))
    if out != "aux":
        assert all(torch.equal(x, y) for x, y in zip(a, aux))


def test_same_list_under_two_indices(path) -> None:
    """The full-batch rule passes g_main as the EMA; out = g_main aliases two inputs."""
    main, aux = _lists(2, seed=7)
    want = bloop_direction([t.clone() for t in main], aux, main, lam=2.0).direction
    m = [t.clone() for t in main]
    got = bloop_direction(m, aux, m, lam=2.0, out=m).direction
    assert _err(got, want) <= 1e-13 * norm(want)


# --------------------------------------------------------------------------- finiteness


def test_finite_steps_are_known_finite_without_a_pass(path) -> None:
    grads, emas = _lists(3, dtype=torch.float32, seed=8), _lists(2, dtype=torch.float32, seed=9)
    step = SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": [1.0, 1e3], "rho": 0.1})
    assert bool(step.surely_finite())
    assert step.outputs_finite()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_lam_is_caught_before_anything_is_written(dtype, path) -> None:
    """lam = 1e308: a finite lam whose direction overflows (issue 11)."""
    main, aux, ema = _lists(3, dtype=dtype, scale=10.0, seed=10)
    before = [t.clone() for t in ema]
    step = SurgeryStep(BloopFormula(), [main, aux], [ema], hyper={"lam": 1e308, "rho": 0.1})
    assert not bool(step.surely_finite())
    assert not step.outputs_finite()
    assert all(torch.equal(x, y) for x, y in zip(ema, before))  # nothing written yet


def test_non_finite_gradient_is_not_surely_finite() -> None:
    main, aux = _lists(2, dtype=torch.float32, seed=11)
    aux[1][2] = math.nan
    step = SurgeryStep(MixedFormula(), [main, aux], [], hyper={"lam": 0.0})
    assert not bool(step.surely_finite())


def test_bound_respects_the_output_dtype() -> None:
    """float16 gradients of 300 with lam = 1000 overflow float16 (max 65504)."""
    main = [torch.full((4,), 300.0, dtype=torch.float16)]
    aux = [torch.full((4,), 300.0, dtype=torch.float16)]
    step = SurgeryStep(MixedFormula(), [main, aux], [], hyper={"lam": 1000.0})
    assert not bool(step.surely_finite())
    assert not step.outputs_finite()
    step = SurgeryStep(MixedFormula(), [main, aux], [], hyper={"lam": 1.0})
    assert bool(step.surely_finite())


def test_a_huge_coefficient_on_a_tiny_vector_is_not_trusted() -> None:
    """A float32 coefficient of 1e39 is inf even if the product would be small."""
    main = [torch.tensor([1.0, 0.0])]
    aux = [torch.tensor([1e-20, 0.0])]
    step = SurgeryStep(MixedFormula(), [main, aux], [], hyper={"lam": 1e39})
    assert not bool(step.surely_finite())
    assert not step.outputs_finite()


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("scale", [1e-20, 1e-22, 1e-30, 1e-36])
@pytest.mark.parametrize("foreach", [True, False])
def test_tiny_float32_gradients_keep_an_exact_projection(scale, foreach, path) -> None:
    """Squares below float32's range: the torch-op path's float64 Gram keeps the projection
    exact (issue 11; its float32 inner products before left cos residuals of ~1e-2 at 1e-22
    and skipped the projection at 1e-30)."""
    main = random_list([(50,), (3, 3)], seed=1, scale=scale, dtype=torch.float32)
    aux = random_list([(50,), (3, 3)], seed=2, scale=scale, dtype=torch.float32)
    ema = random_list([(50,), (3, 3)], seed=3, scale=scale, dtype=torch.float32)
    result = bloop_direction(main, aux, ema, lam=1.0, foreach=foreach)
    assert not bool(result.skipped)
    aux_part = flat(result.direction) - flat(main)
    e = flat(ema)
    cos = abs(float(aux_part @ e)) / (float(aux_part.norm()) * float(e.norm()))
    assert cos <= 1e-5, f"scale {scale}: cos(aux part, e) = {cos:.2e}"


def test_zero_ema_at_tiny_scale_is_where_the_skip_starts(path) -> None:
    main = random_list([(8,)], seed=1, scale=1e-30, dtype=torch.float32)
    aux = random_list([(8,)], seed=2, scale=1e-30, dtype=torch.float32)
    result = bloop_direction(main, aux, [torch.zeros(8)], lam=1.0)
    assert bool(result.skipped)


def test_bfloat16_gradients_with_float32_ema() -> None:
    main, aux = _lists(2, dtype=torch.bfloat16, seed=12)
    ema = _lists(1, dtype=torch.float32, seed=13)[0]
    want_d, want_e = bloop_update_reference(main, aux, ema, lam=0.5, rho=0.25)
    result = SurgeryStep(
        BloopFormula(), [main, aux], [ema], hyper={"lam": 0.5, "rho": 0.25}, out=aux
    ).apply()
    assert all(d.dtype == torch.bfloat16 for d in result.direction)
    assert all(e.dtype == torch.float32 for e in ema)
    assert _err(result.direction, want_d) <= 0.02 * (norm(main) + norm(aux))
    assert _err(ema, want_e) <= 1e-6 * norm(want_e)


def test_reduce_sees_the_float64_gram_once(path) -> None:
    main, aux, ema = _lists(3, seed=14)
    calls = []

    def twice(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.clone())
        return x * 2  # a second identical shard

    want = bloop_direction(main, aux, ema, lam=0.7).direction
    got = bloop_direction(main, aux, ema, lam=0.7, reduce=twice).direction
    assert len(calls) == 1 and calls[0].dtype == torch.float64 and calls[0].shape == (1, 3, 3)
    assert _err(got, want) <= 1e-13 * norm(want)  # the projection is scale-free


def test_orthonormalise_on_a_known_gram() -> None:
    gram = torch.tensor([[[4.0, 2.0], [2.0, 2.0]]], dtype=torch.float64)
    r, skipped = _orthonormalise(gram, torch.ones(1, 2, dtype=torch.bool), 1e-3)
    q_gram = r @ gram @ r.transpose(1, 2)
    assert torch.allclose(q_gram, torch.eye(2, dtype=torch.float64)[None], atol=1e-14)
    assert not skipped.any()


@pytest.mark.parametrize("formula", [PCGradFormula(), DynamicBarrierFormula()])
def test_two_loss_methods_reject_more_aux_losses(formula) -> None:
    grads = _lists(3)
    with pytest.raises(ValueError, match="one"):
        SurgeryStep(formula, grads, [], hyper={"lam": 1.0})


def test_wrong_state_count_and_misaligned_lists_are_rejected() -> None:
    grads, emas = _lists(2), _lists(2)
    with pytest.raises(ValueError, match="keeps 1"):
        SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": 1.0, "rho": 0.1})
    with pytest.raises(ValueError, match="tensors"):
        SurgeryStep(MixedFormula(), [grads[0], grads[1][:2]], [], hyper={"lam": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        SurgeryStep(MixedFormula(), [grads[0]], [], hyper={"lam": 1.0})


def test_out_on_an_updated_state_and_a_second_apply_are_rejected() -> None:
    grads, emas = _lists(2), _lists(1)
    with pytest.raises(ValueError, match="state"):
        SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": 1.0, "rho": 0.1}, out=emas[0])
    step = SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": 1.0, "rho": 0.1})
    step.apply()
    with pytest.raises(RuntimeError, match="already"):
        step.apply()


@pytest.mark.parametrize("path", ["kernel", "torch-ops"])
def test_without_norms_pass_one_reads_only_the_lists_the_formula_needs(path, monkeypatch) -> None:
    """Paper order, no leak, no norms: pass 1 needs only <g_1, e> and <e, e>; a NaN in g_0
    does not reach the coefficients (only the direction, which adds g_0)."""
    if path == "torch-ops":
        monkeypatch.setattr(contract, "_native_usable", lambda *args: False)
    main, aux, ema = _lists(3, dtype=torch.float32, seed=15)
    coef = bloop_direction(main, aux, ema, lam=0.5).coef
    main[0][0, 0] = math.nan
    step = SurgeryStep(
        BloopFormula(leak=False), [main, aux], [ema], hyper={"lam": 0.5, "rho": 0.1}, norms=False
    )
    assert torch.isfinite(step.gram()).all()
    with pytest.raises(RuntimeError, match="norms"):
        step.surely_finite()
    result = step.apply()
    assert "leak" not in result.info and result.sq_norms is None
    assert float(result.info["coef"][0, 0, 0]) == pytest.approx(float(coef), rel=1e-6)


def test_path_fixture_selects_the_path(path) -> None:
    grads = _lists(2, dtype=torch.float32)
    assert SurgeryStep(MixedFormula(), grads, [], hyper={"lam": 1.0}).native == (path == "kernel")


def test_kernel_pass_one_falls_back_to_float64_out_of_float32_range(monkeypatch) -> None:
    """The kernel sums float32 products in float32 lanes: tiny or overflowing squares send
    pass 1 to the float64 torch-op Gram (normal ranges stay on the kernel)."""
    if not contract._native_usable([[torch.zeros(2)]], 1, 1):
        pytest.skip("C kernel not available")
    calls = []
    real = contract._gram.gram
    monkeypatch.setattr(contract._gram, "gram", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    for scale, expected in [(1.0, 0), (1e10, 0), (1e-22, 1), (1e20, 1)]:
        calls.clear()
        grads, emas = _lists(2, dtype=torch.float32, scale=scale), _lists(1, dtype=torch.float32)
        emas = [[e * scale for e in emas[0]]]
        step = SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": 1.0, "rho": 0.1})
        assert step.native
        assert torch.isfinite(step.gram()).all()
        assert (len(calls) > 0) == bool(expected), f"scale {scale}: {len(calls)} float64 passes"


def test_formulas_satisfy_the_protocol_and_accept_tensor_hyperparameters() -> None:
    """0-dim tensor hyperparameters (what torch.compile and lam schedules pass) give the same
    step as numbers."""
    from torchbloop.functional import Formula

    for formula in (BloopFormula(), MixedFormula(), PCGradFormula(), DynamicBarrierFormula()):
        assert isinstance(formula, Formula)
    grads, emas = _lists(2, seed=16), _lists(1, seed=17)
    emas2 = _clone(emas)
    a = SurgeryStep(BloopFormula(), grads, emas, hyper={"lam": 0.3, "rho": 0.2}).apply()
    lam, rho = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    b = SurgeryStep(BloopFormula(), grads, emas2, hyper={"lam": lam, "rho": rho}).apply()
    assert _err(a.direction, b.direction) == 0.0 and _err(emas[0], emas2[0]) == 0.0
