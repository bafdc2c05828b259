"""MGDA: the segment weight and the K-objective solver on the Gram matrix against the float64
references, the min-norm certificate, a brute-force grid, and (optionally) TorchJD, on random
inputs (scales 1e-10..1e15, f32/f64).

The min-norm point ``d`` of the hull of ``v_0..v_K`` is characterised exactly by: ``d`` is in the
hull and ``<d, v_k> >= ||d||^2`` for every ``k``. The certificate tests check both.
"""

from __future__ import annotations

import pytest
import torch
from _method_props import (
    LAMS,
    PATHS,
    assert_vec_close,
    budget,
    combine,
    contract_step,
    flat,
    gram,
    pairs,
    random_list,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from _asserts import DTYPES, SCALES, SHAPE_SETS
from torchbloop.functional.mgda import (
    MAX_OBJECTIVES,
    MGDAFormula,
    mgda_direction,
    mgda_direction_reference,
    mgda_segment_weight,
    min_norm_weights,
)

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)


def fast_two(main, aux, lam):
    g = gram([main, aux])
    gamma = mgda_segment_weight(g[0, 0], g[1, 0], g[1, 1], lam=lam)
    return combine([gamma, (1 - gamma) * lam], [main, aux]), gamma


def fast_k(main, auxes, lams):
    vectors = [main, *auxes]
    g = gram(vectors)
    scales = torch.tensor([1.0, *lams], dtype=g.dtype)
    w = min_norm_weights(g, scales)
    return combine(list(w * scales), vectors), w


def segment_budget(a, b, dtype) -> float:
    """``gamma`` is computed to ~eps ``(||a||^2 + ||b||^2) / ||a - b||^2``, and it multiplies
    ``a - b``: the direction is good to ~eps ``(||a|| + ||b||) (1 + (||a|| + ||b||) / ||a - b||)``."""
    na, nb, nab = float(a.norm()), float(b.norm()), float((a - b).norm())
    amp = 1.0 + ((na + nb) / nab if nab > 0 else 0.0)
    return budget(dtype, na, nb, factor=10 * amp)


@SETTINGS
@given(pairs())
def test_two_objectives_equal_reference(case):
    main, aux, lam = case
    d, gamma = fast_two(main, aux, lam)
    assert 0.0 <= float(gamma) <= 1.0
    ref = mgda_direction_reference(main, aux, lam=lam)
    a, b = flat(main), lam * flat(aux)
    assert_vec_close(d, ref, segment_budget(a, b, main[0].dtype), "MGDA vs reference")


@st.composite
def objectives(draw: st.DrawFn):
    """``(main, [aux_1..aux_K], [lam_1..lam_K])`` with K in 1..3, aux scales varied."""
    k = draw(st.integers(1, 3))
    shapes = draw(st.sampled_from(SHAPE_SETS))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from(SCALES[:-1] if k > 1 else SCALES))
    seed = draw(st.integers(0, 2**20))
    main = random_list(shapes, seed=seed, scale=scale, dtype=dtype)
    auxes, lams = [], []
    for i in range(k):
        ratio = draw(st.sampled_from((1e-3, 1.0, 1e3)))
        auxes.append(random_list(shapes, seed=seed + 1 + i, scale=scale * ratio, dtype=dtype))
        lams.append(draw(st.sampled_from(LAMS[1:5])))
    if draw(st.booleans()):  # one objective a mix of others: a face that is not a simplex
        auxes[-1] = [
            (0.3 * m.double() + 0.7 * a.double()).to(dtype) for m, a in zip(main, auxes[0])
        ]
    return main, auxes, lams


def certificate_slack(vectors, dtype) -> float:
    top = max(float(v.norm()) for v in vectors)
    return budget(dtype, top * top, factor=200)


@SETTINGS
@given(objectives())
def test_min_norm_certificate(case):
    """The K-objective solver's point is in the hull (weights >= 0, summing to 1) and satisfies
    ``<d, v_k> >= ||d||^2`` for every objective ``v_k = lam_k g_k``: it is THE min-norm point,
    a common descent direction of all objectives."""
    main, auxes, lams = case
    d, w = fast_k(main, auxes, lams)
    assert bool((w >= 0).all()) and abs(float(w.sum()) - 1.0) < 1e-5
    dv = flat(d)
    vectors = [flat(main)] + [lam * flat(a) for lam, a in zip(lams, auxes)]
    slack = certificate_slack(vectors, main[0].dtype)
    for k, v in enumerate(vectors):
        assert float(dv @ v) >= float(dv @ dv) - slack, (k, float(dv @ v), float(dv @ dv), slack)


@SETTINGS
@given(objectives())
def test_k_objectives_equal_reference(case):
    """The device solver (on the Gram matrix) equals the float64 reference (least squares on the
    vectors themselves, face by face)."""
    main, auxes, lams = case
    d, _ = fast_k(main, auxes, lams)
    ref = mgda_direction_reference(main, auxes, lam=lams)
    vectors = [flat(main)] + [lam * flat(a) for lam, a in zip(lams, auxes)]
    top = max(float(v.norm()) for v in vectors)
    # ||d - d*||^2 <= ||d||^2 - ||d*||^2 (strong convexity of the squared norm on the hull), and
    # a Gram-based solve knows ||d||^2 to ~eps max ||v||^2: d is good to ~sqrt(eps) max ||v||.
    tol = top * (200 * budget(main[0].dtype, 1.0)) ** 0.5
    assert_vec_close(d, ref, tol, "MGDA-K vs reference")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**20), scale=st.sampled_from(SCALES))
def test_three_objectives_beat_a_brute_force_grid(seed, scale):
    """float64: no point of a fine grid over the weight simplex has a smaller norm than the
    solver's point (up to rounding), and the best grid point is near it."""
    vecs = [
        torch.randn(6, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
        * scale
        for i in range(3)
    ]
    vecs[2] = vecs[2] - 1.5 * vecs[0]  # make the min-norm point lie inside more often
    d, _ = fast_k([vecs[0]], [[vecs[1]], [vecs[2]]], [1.0, 1.0])
    dn = float(flat(d).norm()) ** 2
    n = 200
    ii, jj = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    keep = ii + jj <= n
    w0, w1 = ii[keep].double() / n, jj[keep].double() / n
    pts = w0[:, None] * vecs[0] + w1[:, None] * vecs[1] + (1 - w0 - w1)[:, None] * vecs[2]
    grid_min = float((pts * pts).sum(1).min())
    assert dn <= grid_min * (1 + 1e-9) + 1e-300
    top = max(float(v.norm()) for v in vecs)
    assert grid_min - dn <= (top / n) ** 2 * 4 + 1e-300 * top  # the grid's own resolution


@SETTINGS
@given(pairs())
def test_solver_equals_segment_formula_for_two(case):
    """With one aux loss the general solver finds the closed form's point."""
    main, aux, lam = case
    d2, _ = fast_two(main, aux, lam)
    dk, _ = fast_k(main, [aux], [lam])
    a, b = flat(main), lam * flat(aux)
    assert_vec_close(dk, flat(d2), 2 * segment_budget(a, b, main[0].dtype), "solver vs segment")


def test_known_values():
    """Orthogonal unit gradients: the midpoint; ``b`` inside the hull's near side: ``b`` itself;
    identical: that vector; ``lam = 0``: the zero vector is an objective, so ``d = 0``."""
    m, a = [torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]
    assert torch.equal(fast_two(m, a, 1.0)[0][0], torch.tensor([0.5, 0.5]))
    assert torch.equal(fast_two(m, [torch.tensor([0.5, 0.0])], 1.0)[0][0], torch.tensor([0.5, 0.0]))
    assert torch.equal(fast_two(m, m, 1.0)[0][0], m[0])
    assert torch.equal(fast_two(m, a, 0.0)[0][0], torch.zeros(2))


def test_too_many_objectives_rejected():
    with pytest.raises(ValueError, match="at most"):
        min_norm_weights(torch.eye(MAX_OBJECTIVES + 1))


def test_all_zero_gradients():
    d, w = fast_k([torch.zeros(3)], [[torch.zeros(3)], [torch.zeros(3)]], [1.0, 2.0])
    assert torch.equal(d[0], torch.zeros(3)) and torch.isfinite(w).all()


def test_batched_blocks_solve_independently():
    """A leading batch dimension (one problem per block) gives each block its own answer."""
    g1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g2 = torch.tensor([[1.0, 0.5], [0.5, 4.0]])
    both = min_norm_weights(torch.stack([g1, g2]))
    assert torch.allclose(both[0], min_norm_weights(g1)) and torch.allclose(
        both[1], min_norm_weights(g2)
    )


@pytest.mark.parametrize("k", [1, 2])
def test_against_torchjd(k):
    """TorchJD's MGDA (Frank-Wolfe on the Gramian, Sener and Koltun's Algorithm 2) reaches the
    same point; skipped when TorchJD is not installed (extra ``bench``)."""
    torchjd = pytest.importorskip("torchjd.aggregation")
    gen = torch.Generator().manual_seed(3)
    rows = torch.randn(k + 1, 9, generator=gen, dtype=torch.float64)
    rows[1] *= 3.0
    lams = [0.5] * k
    jac = torch.stack([rows[0]] + [lam * rows[i + 1] for i, lam in enumerate(lams)])
    theirs = torchjd.MGDA(epsilon=1e-12, max_iters=20000)(jac)
    ours, _ = fast_k([rows[0]], [[rows[i + 1]] for i in range(k)], lams)
    tol = 1e-9 if k == 1 else 1e-4  # Frank-Wolfe converges slowly on a triangle
    assert_vec_close(ours, theirs, tol * float(jac.norm()), "vs TorchJD")


def test_origin_inside_the_hull():
    """Three points of a triangle around the origin: the min-norm point is the origin (a
    Pareto-stationary point), found by the reference and by the solver (all weights > 0)."""
    pts = [
        torch.tensor([1.0, 0.0], dtype=torch.float64),
        torch.tensor([-1.0, 1.0], dtype=torch.float64),
        torch.tensor([-1.0, -1.0], dtype=torch.float64),
    ]
    d = mgda_direction_reference([pts[0]], [[pts[1]], [pts[2]]], lam=[1.0, 1.0])
    assert float(d[0].norm()) < 1e-15
    ours, w = fast_k([pts[0]], [[pts[1]], [pts[2]]], [1.0, 1.0])
    assert float(ours[0].norm()) < 1e-15 and bool((w > 0).all())


@pytest.mark.parametrize(("kernel", "alias"), PATHS)
@SETTINGS
@given(case=objectives())
def test_contract_path_equals_reference(case, kernel, alias):
    """The fast path (the contract: Gram pass, the segment formula or the face solver, one
    combination pass) equals the float64 references, for 1 to 3 aux losses."""
    main, auxes, lams = case
    lam = lams[0] if len(lams) == 1 else lams
    result = contract_step(MGDAFormula(), [main, *auxes], {"lam": lam}, kernel=kernel, alias=alias)
    vectors = [flat(main)] + [w * flat(a) for w, a in zip(lams, auxes)]
    if len(lams) == 1:
        ref = mgda_direction_reference(main, auxes[0], lam=lams[0])
        tol = segment_budget(vectors[0], vectors[1], main[0].dtype)
    else:
        ref = mgda_direction_reference(main, auxes, lam=lams)
        top = max(float(v.norm()) for v in vectors)
        tol = top * (200 * budget(torch.float64, 1.0)) ** 0.5 + budget(main[0].dtype, top)
    assert_vec_close(result.direction, ref, tol, "contract vs reference")
    w = result.info["weights"][0]
    assert bool((w >= 0).all()) and abs(float(w.sum()) - 1.0) < 1e-12


def test_direction_function():
    d = mgda_direction([torch.tensor([1.0, 0.0])], [[torch.tensor([0.0, 1.0])]] * 2, lam=[1.0, 1.0])
    assert torch.allclose(d[0], torch.tensor([0.5, 0.5]))
