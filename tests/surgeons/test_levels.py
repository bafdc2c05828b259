"""Several auxiliary losses in priority order (method.md section 7): K-level Bloop and Mixed.

Bloop with K = 1..3 levels against a float64 reference written here from the spec (one EMA per
level above the last, each of its own gradient; level k projected off ``span(e_0..e_{k-1})``),
on random gradient streams at scales 1e-10..1e15, in both EMA orders, through ``combine`` and
``backward``, and across a ``weights_only`` save/load in the middle of the stream.
"""

from __future__ import annotations

import io

import pytest
import torch

from _asserts import flat
from torchbloop import Bloop, DynamicBarrier, Mixed, PCGrad

SHAPES = [(3, 2), (4,), ()]
STEPS = 5


def _stream(k: int, scale: float, dtype: torch.dtype, seed: int = 0):
    """STEPS steps of K + 1 gradient lists; the levels have different typical sizes."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        step = []
        for level in range(k + 1):
            size = scale * (1.0 + level)
            step.append(
                [
                    (torch.randn(s, generator=gen, dtype=torch.float64) * size).to(dtype)
                    for s in SHAPES
                ]
            )
        out.append(step)
    return out


def levels_reference(stream, lams, rho, order):
    """Directions and final EMAs of K-level Bloop, float64 on flat vectors, as the spec reads."""
    k = len(lams)
    emas = None
    directions = []
    for step in stream:
        g = [flat(level).double() for level in step]
        if emas is None:
            emas = [g[j].clone() for j in range(k)]
        if order == "code":
            emas = [(1 - rho) * e + rho * g[j] for j, e in enumerate(emas)]
        d = g[0].clone()
        for level in range(1, k + 1):
            basis = torch.stack(emas[:level], dim=1)  # [n, level]
            proj = basis @ torch.linalg.lstsq(basis, g[level].unsqueeze(1)).solution.squeeze(1)
            d = d + lams[level - 1] * (g[level] - proj)
        if order == "paper":
            emas = [(1 - rho) * e + rho * g[j] for j, e in enumerate(emas)]
        directions.append(d)
    return directions, emas


def _params(dtype: torch.dtype):
    return [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in SHAPES]


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _tolerance(step, lams, dtype) -> float:
    size = float(flat(step[0]).double().norm()) + sum(
        lam * float(flat(g).double().norm()) for lam, g in zip(lams, step[1:])
    )
    return size * (1e-11 if dtype == torch.float64 else 1e-4)


@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize(
    ("scale", "dtype"),
    [(s, torch.float64) for s in (1e-10, 1.0, 1e5, 1e15)]
    + [(1e-10, torch.float32), (1e10, torch.float32)],
)
def test_bloop_levels_equal_the_reference_through_combine_and_a_reload(order, k, scale, dtype):
    lams = [0.7, 2.0, 0.3][:k]
    rho = 0.3
    stream = _stream(k, scale, dtype)
    expected, ema_ref = levels_reference(stream, lams, rho, order)
    surgeon = Bloop(_params(dtype), lam=lams, rho=rho, ema_order=order)
    for t, step in enumerate(stream):
        if t == 2:  # save, reload into a fresh surgeon, continue
            state = _roundtrip(surgeon.state_dict())
            surgeon = Bloop(_params(dtype), lam=[9.0] * k, rho=rho, ema_order=order)
            surgeon.load_state_dict(state)
            assert list(surgeon.lams) == lams
        d = surgeon.combine(step[0], step[1] if k == 1 else step[1:])
        err = float((flat(d).double() - expected[t]).norm())
        assert err <= _tolerance(step, lams, dtype), (t, err)
    assert surgeon.emas is not None and len(surgeon.emas) == k
    for e, r in zip(surgeon.emas, ema_ref):
        torch.testing.assert_close(
            flat(e).double(), r, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0
        )


@pytest.mark.parametrize("k", [2, 3])
def test_backward_equals_combine_with_k_losses(k):
    lams = [0.5, 1.5, 0.25][:k]
    gen = torch.Generator().manual_seed(1)
    targets = [torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(k + 1)]
    w1 = torch.nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64))
    w2 = torch.nn.Parameter(w1.detach().clone())
    s1 = Bloop([w1], lam=lams, rho=0.5)
    s2 = Bloop([w2], lam=lams, rho=0.5)
    for _step in range(4):
        x = torch.randn(5, generator=gen, dtype=torch.float64)
        l1 = [((w1 - t) * x).pow(2).sum() * (j + 1) for j, t in enumerate(targets)]
        s1.backward(main=l1[0], aux=l1[1:])
        l2 = [((w2 - t) * x).pow(2).sum() * (j + 1) for j, t in enumerate(targets)]
        grads = [list(torch.autograd.grad(loss, [w2])) for loss in l2]
        d = s2.combine(grads[0], grads[1:])
        assert w1.grad is not None
        torch.testing.assert_close(w1.grad, d[0], rtol=1e-13, atol=1e-15)
        with torch.no_grad():
            w1.sub_(0.1 * w1.grad)
            w2.sub_(0.1 * d[0])
    for a, b in zip(s1.emas or [], s2.emas or []):
        torch.testing.assert_close(a[0], b[0], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("order", ["paper", "code"])
def test_each_level_term_is_orthogonal_to_the_emas_above_it(order):
    """lam_k = 0 except one level at a time: that term is orthogonal to e_0..e_{k-1}."""
    k = 3
    stream = _stream(k, 1.0, torch.float64, seed=4)
    for level in range(1, k + 1):
        lams = [0.0] * k
        lams[level - 1] = 1.0
        surgeon = Bloop(_params(torch.float64), lam=lams, rho=0.4, ema_order=order)
        for step in stream:
            emas = None if surgeon.emas is None else [flat(e).clone() for e in surgeon.emas]
            d = surgeon.combine(step[0], step[1:])
            if order == "code" or emas is None:
                emas = [flat(e).clone() for e in surgeon.emas or []]
                if order == "paper":  # first step: the EMAs started from these gradients
                    emas = [flat(step[j]) for j in range(k)]
            term = flat(d) - flat(step[0])
            for j in range(level):
                cos = float(term @ emas[j]) / (float(term.norm() * emas[j].norm()) + 1e-300)
                assert abs(cos) < 1e-10, (level, j, cos)


def test_lam_zero_removes_a_level_and_one_level_is_bloop():
    stream = _stream(2, 1.0, torch.float64, seed=2)
    two = Bloop(_params(torch.float64), lam=[0.8, 0.0], rho=0.2)
    one = Bloop(_params(torch.float64), lam=0.8, rho=0.2)
    for step in stream:
        a = two.combine(step[0], step[1:])
        b = one.combine(step[0], step[1])
        torch.testing.assert_close(flat(a), flat(b), rtol=1e-12, atol=1e-14)


def test_one_level_list_equals_the_float_bit_for_bit():
    stream = _stream(1, 1.0, torch.float32, seed=3)
    listed = Bloop(_params(torch.float32), lam=[0.8], rho=0.2)
    plain = Bloop(_params(torch.float32), lam=0.8, rho=0.2)
    for step in stream:
        assert torch.equal(flat(listed.combine(step[0], [step[1]])), flat(plain.combine(*step)))
    assert listed.lam == (0.8,) and plain.lam == 0.8
    assert set(listed.state_dict()["state"][0]) == {"main_grad_ema"}


def test_state_dict_keys_per_level_and_another_k_is_refused():
    surgeon = Bloop(_params(torch.float64), lam=[0.1, 0.2, 0.3])
    step = _stream(3, 1.0, torch.float64)[0]
    surgeon.combine(step[0], step[1:])
    keys = set(surgeon.state_dict()["state"][0])
    assert keys == {"main_grad_ema", "aux1_grad_ema", "aux2_grad_ema"}
    one = Bloop(_params(torch.float64), lam=0.1)
    with pytest.raises(ValueError, match="built for 1 auxiliary losses"):
        one.load_state_dict(surgeon.state_dict())  # the levels do not fit


def test_mixed_with_k_losses():
    stream = _stream(3, 1.0, torch.float64, seed=5)
    surgeon = Mixed(_params(torch.float64), lam=[0.5, 2.0, 0.0])
    for step in stream:
        d = flat(surgeon.combine(step[0], step[1:]))
        expected = flat(step[0]) + 0.5 * flat(step[1]) + 2.0 * flat(step[2])
        torch.testing.assert_close(d, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("cls", [PCGrad, DynamicBarrier])
def test_two_loss_methods_refuse_several_aux_losses(cls):
    with pytest.raises(ValueError, match=r"takes at most 1 auxiliary loss"):
        cls(_params(torch.float64), lam=[0.1, 0.2])


def test_wrong_number_of_aux_losses_is_refused_before_any_change():
    w = torch.nn.Parameter(torch.ones(3))
    surgeon = Bloop([w], lam=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"got 1 auxiliary losses, the surgeon was built for 2"):
        surgeon.backward(main=w.sum(), aux=[w.pow(2).sum()])
    with pytest.raises(ValueError, match=r"got 1 gradient lists"):
        surgeon.combine([torch.ones(3)], [[torch.ones(3)]])
    with pytest.raises(ValueError, match=r"built for 2 auxiliary losses"):
        surgeon.lam = 0.5
    assert surgeon.step_count == 0 and w.grad is None
