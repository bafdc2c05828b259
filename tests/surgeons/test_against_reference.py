"""The surgeons against the method written out in plain Python (float64), step by step.

Each test trains the same small least-squares problem twice: with the surgeon and
``torch.optim.SGD``, and with a plain-Python loop that holds its own parameters and EMA as lists
of floats. Parameters, directions and the EMA must agree at every step.
"""

from __future__ import annotations

import math

import pytest
import torch

from _asserts import flat
from torchbloop import Bloop, DynamicBarrier, Mixed, PCGrad
from torchbloop.functional import bloop_direction

SHAPES = [(2, 3), (3,), ()]
P = 10  # total number of parameters
LR = 0.05
STEPS = 6


def _problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    theta0 = torch.randn(P, generator=gen, dtype=torch.float64)
    batches = [
        (
            torch.randn(4, P, generator=gen, dtype=torch.float64),
            torch.randn(4, generator=gen, dtype=torch.float64),
        )
        for _ in range(STEPS)
    ]
    weights = torch.rand(P, generator=gen, dtype=torch.float64) + 0.5
    target = torch.randn(P, generator=gen, dtype=torch.float64)
    return theta0, batches, weights, target


def _params(theta0):
    out, start = [], 0
    for s in SHAPES:
        n = math.prod(s)
        out.append(torch.nn.Parameter(theta0[start : start + n].reshape(s).clone()))
        start += n
    return out


def _losses(params, x, y, weights, target):
    theta = torch.cat([p.reshape(-1) for p in params])
    main = 0.5 * ((x @ theta - y) ** 2).mean()
    aux = 0.5 * (weights * (theta - target) ** 2).sum()
    return main, aux


# ---- plain Python --------------------------------------------------------------------------


def _dot(a, b):
    return sum(u * v for u, v in zip(a, b))


def _grads_py(theta, x, y, weights, target):
    rows, n = x.tolist(), len(y)
    res = [_dot(r, theta) - t for r, t in zip(rows, y.tolist())]
    g_main = [sum(rows[j][i] * res[j] for j in range(n)) / n for i in range(P)]
    g_aux = [w * (t - s) for w, t, s in zip(weights.tolist(), theta, target.tolist())]
    return g_main, g_aux


def _project_out(a, e):
    ee = _dot(e, e)
    if ee == 0.0:
        return list(a)
    c = _dot(a, e) / ee
    return [u - c * v for u, v in zip(a, e)]


def _bloop_py(theta0, batches, weights, target, *, lam, rho, order):
    """Yield (direction, ema after the step, theta after the SGD step) per step."""
    theta, ema = theta0.tolist(), None
    for x, y in batches:
        g_main, g_aux = _grads_py(theta, x, y, weights, target)
        if ema is None:
            ema = list(g_main)  # lazy initialisation from the first main gradient
        if order == "code":
            ema = [(1 - rho) * e + rho * g for e, g in zip(ema, g_main)]
        d = [m + lam * a for m, a in zip(g_main, _project_out(g_aux, ema))]
        if order == "paper":
            ema = [(1 - rho) * e + rho * g for e, g in zip(ema, g_main)]
        theta = [t - LR * v for t, v in zip(theta, d)]
        yield d, ema, theta


def _close(actual, expected, what):
    a = flat(actual) if isinstance(actual, list) else actual
    b = torch.tensor(expected, dtype=torch.float64)
    scale = float(b.norm()) + 1e-300
    assert float((a - b).norm()) <= 1e-12 * scale, f"{what}: {a} != {b}"


@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize("rho", [0.3, 1.0])
@pytest.mark.parametrize("foreach", [True, False])
def test_bloop_surgeon_follows_plain_python(order, rho, foreach):
    theta0, batches, weights, target = _problem()
    params = _params(theta0)
    surgeon = Bloop(params, lam=0.7, rho=rho, ema_order=order, foreach=foreach)
    opt = torch.optim.SGD(params, lr=LR)
    expected = _bloop_py(theta0, batches, weights, target, lam=0.7, rho=rho, order=order)
    for step, ((x, y), (d, ema, theta)) in enumerate(zip(batches, expected)):
        opt.zero_grad()
        surgeon.backward(*_losses(params, x, y, weights, target))
        _close([p.grad for p in params], d, f"direction at step {step}")
        assert surgeon.ema is not None
        _close(surgeon.ema, ema, f"EMA at step {step}")
        opt.step()
        _close([p.detach() for p in params], theta, f"parameters at step {step}")
    assert surgeon.step_count == STEPS


def _direction_on(params, x, y, weights, target, e_fn):
    """Bloop's direction at ``params`` projecting on ``e_fn(g_main)``, via the functional core."""
    main, aux = _losses(params, x, y, weights, target)
    g_main = list(torch.autograd.grad(main, params))
    g_aux = list(torch.autograd.grad(aux, params))
    return g_main, g_aux


@pytest.mark.parametrize("order", ["paper", "code"])
def test_rho_one_reductions(order):
    """code: rho=1 projects on the current batch gradient (Eq. 3 on that batch);
    paper: rho=1 projects on the previous step's gradient (the first step on its own)."""
    theta0, batches, weights, target = _problem(1)
    params = _params(theta0)
    surgeon = Bloop(params, lam=2.0, rho=1.0, ema_order=order)
    opt = torch.optim.SGD(params, lr=LR)
    previous = None
    for x, y in batches:
        g_main, g_aux = _direction_on(params, x, y, weights, target, None)
        on = g_main if (order == "code" or previous is None) else previous
        expected = bloop_direction(g_main, g_aux, on, lam=2.0).direction
        opt.zero_grad()
        surgeon.backward(*_losses(params, x, y, weights, target))
        got = flat([p.grad for p in params])
        assert float((got - flat(expected)).norm()) <= 1e-12 * float(flat(expected).norm())
        # The aux part of the step is orthogonal to the gradient projected on.
        assert abs(float((got - flat(g_main)) @ flat(on))) <= 1e-10 * float(flat(on).norm()) ** 2
        previous = g_main
        opt.step()


@pytest.mark.parametrize("order", ["paper", "code"])
def test_first_step_projects_on_first_main_gradient(order):
    theta0, batches, weights, target = _problem(2)
    params = _params(theta0)
    surgeon = Bloop(params, lam=1.5, rho=0.01, ema_order=order)
    x, y = batches[0]
    g_main, g_aux = _direction_on(params, x, y, weights, target, None)
    surgeon.backward(*_losses(params, x, y, weights, target))
    expected = bloop_direction(g_main, g_aux, g_main, lam=1.5).direction
    got = flat([p.grad for p in params])
    assert float((got - flat(expected)).norm()) <= 1e-12 * float(flat(expected).norm())
    # The EMA after one step is that gradient (for any rho: (1 - rho) g + rho g = g).
    assert float((flat(surgeon.ema) - flat(g_main)).norm()) <= 1e-14 * float(flat(g_main).norm())


def _run(surgeon_cls, batches, weights, target, theta0, **kw):
    params = _params(theta0)
    surgeon = surgeon_cls(params, **kw)
    opt = torch.optim.SGD(params, lr=LR)
    directions = []
    for x, y in batches:
        opt.zero_grad()
        surgeon.backward(*_losses(params, x, y, weights, target))
        directions.append(flat([p.grad for p in params]))
        opt.step()
    return directions


def test_dynamic_barrier_is_bloop_without_ema_with_clipped_coefficient():
    """mu g_m + lam g_a == g_m + lam (g_a - min(r, 1/lam) g_m), r = <g_a, g_m>/||g_m||^2."""
    gen = torch.Generator().manual_seed(3)
    clipped = unclipped = 0
    for lam in (0.1, 1.0, 10.0):
        for _ in range(10):
            g_m = [
                torch.randn(4, generator=gen, dtype=torch.float64),
                torch.randn((), generator=gen, dtype=torch.float64),
            ]
            g_a = [
                torch.randn(4, generator=gen, dtype=torch.float64),
                torch.randn((), generator=gen, dtype=torch.float64),
            ]
            w = [
                torch.nn.Parameter(torch.zeros(4, dtype=torch.float64)),
                torch.nn.Parameter(torch.zeros((), dtype=torch.float64)),
            ]
            d = flat(DynamicBarrier(w, lam=lam).combine(g_m, g_a))
            m, a = flat(g_m), flat(g_a)
            r = float(a @ m) / float(m @ m)
            if r <= 1 / lam:
                unclipped += 1
                bloop = flat(Bloop(w, lam=lam, rho=1.0, ema_order="code").combine(g_m, g_a))
                assert float((d - bloop).norm()) <= 1e-12 * float(bloop.norm())
            else:
                clipped += 1
                assert float((d - lam * a).norm()) <= 1e-12 * float(d.norm())
            expected = m + lam * (a - min(r, 1 / lam) * m)
            assert float((d - expected).norm()) <= 1e-12 * float(expected.norm())
    assert clipped > 0 and unclipped > 0  # both branches were exercised


def test_bloop_code_rho_one_equals_dynamic_barrier_when_not_clipped():
    """Bloop without EMA (code order, rho=1) and Dynamic Barrier coincide while r <= 1/lam."""
    theta0, batches, weights, target = _problem(4)
    d_bloop = _run(Bloop, batches, weights, target, theta0, lam=0.05, rho=1.0, ema_order="code")
    d_db = _run(DynamicBarrier, batches, weights, target, theta0, lam=0.05)
    for a, b in zip(d_bloop, d_db):
        assert float((a - b).norm()) <= 1e-12 * float(b.norm())


def test_pcgrad_equals_mixed_without_conflict():
    gen = torch.Generator().manual_seed(5)
    w = [
        torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros((), dtype=torch.float64)),
    ]
    conflicts = 0
    for _ in range(20):
        g_m = [
            torch.randn(3, 2, generator=gen, dtype=torch.float64),
            torch.randn((), generator=gen, dtype=torch.float64),
        ]
        g_a = [
            torch.randn(3, 2, generator=gen, dtype=torch.float64),
            torch.randn((), generator=gen, dtype=torch.float64),
        ]
        pc = flat(PCGrad(w, lam=0.5).combine(g_m, g_a))
        mx = flat(Mixed(w, lam=0.5).combine(g_m, g_a))
        if float(flat(g_m) @ flat(g_a)) >= 0:
            assert torch.equal(pc, mx)
        else:
            conflicts += 1
            assert float((pc - mx).norm()) > 1e-3 * float(mx.norm())
    assert 0 < conflicts < 20
