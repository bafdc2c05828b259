"""Per-parameter-group settings: a group's own ``lam``/``rho``, and the granularity of the
inner products (``"global"``, ``"group"``, ``"tensor"``).

Each behaviour is held equal to something simpler: per-group ``lam`` with global inner products
to the formula written out in float64; ``granularity="group"`` to one surgeon per group;
``"tensor"`` to one surgeon per tensor; a group with ``lam = 0`` to a surgeon that does not
hold that group at all (its direction is its main gradient).
"""

from __future__ import annotations

import io

import pytest
import torch

from _asserts import flat
from torchbloop import Bloop, Mixed

SHAPES = [(3, 2), (4,), (2,), (5,)]


def _params():
    return [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in SHAPES]


def _grads(step: int, k: int = 1):
    gen = torch.Generator().manual_seed(step)
    return [
        [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES] for _ in range(k + 1)
    ]


def _groups(params, **settings):
    """Two groups: tensors 0-1 with ``settings``, tensors 2-3 with the surgeon's own."""
    return [{"params": params[:2], **settings}, {"params": params[2:]}]


def test_per_group_lam_with_global_inner_products_follows_the_formula():
    lams = (0.3, 2.0)
    surgeon = Bloop(_groups(_params(), lam=lams[0]), lam=lams[1], rho=0.5)
    e = None
    for step in range(4):
        main, aux = _grads(step)
        g0, g1 = flat(main), flat(aux)
        e = g0.clone() if e is None else e
        coef = float(g1 @ e) / float(e @ e)  # one projection coefficient over ALL tensors
        lam = torch.tensor([lams[0]] * 10 + [lams[1]] * 7, dtype=torch.float64)
        expected = g0 + lam * (g1 - coef * e)
        d = surgeon.combine(main, aux)
        torch.testing.assert_close(flat(d), expected, rtol=1e-12, atol=1e-14)
        e = 0.5 * e + 0.5 * g0


@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize("k", [1, 2])
def test_group_granularity_equals_one_surgeon_per_group(order, k):
    lam_a, lam_b = ([0.3], [2.0]) if k == 1 else ([0.3, 0.1], [2.0, 0.5])
    params = _params()
    groups = [
        {"params": params[:2], "lam": lam_a, "rho": 0.2},
        {"params": params[2:], "lam": lam_b, "rho": 0.6},
    ]
    surgeon = Bloop(groups, lam=lam_b, granularity="group", ema_order=order, diagnostics=True)
    first = Bloop(_params()[:2], lam=lam_a, rho=0.2, ema_order=order)
    second = Bloop(_params()[2:], lam=lam_b, rho=0.6, ema_order=order)
    for step in range(4):
        grads = _grads(step, k)
        d = surgeon.combine(grads[0], grads[1:])
        a = first.combine(grads[0][:2], [g[:2] for g in grads[1:]])
        b = second.combine(grads[0][2:], [g[2:] for g in grads[1:]])
        torch.testing.assert_close(flat(d), flat(a + b), rtol=1e-12, atol=1e-14)
    assert surgeon.diagnostics is not None and surgeon.diagnostics.coef.shape[0] == 2


def test_tensor_granularity_equals_one_surgeon_per_tensor():
    surgeon = Bloop(_params(), lam=0.7, rho=0.3, granularity="tensor")
    singles = [Bloop([p], lam=0.7, rho=0.3) for p in _params()]
    for step in range(4):
        main, aux = _grads(step)
        d = surgeon.combine(main, aux)
        expected = [s.combine([m], [a])[0] for s, m, a in zip(singles, main, aux)]
        torch.testing.assert_close(flat(d), flat(expected), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", [Bloop, Mixed])
def test_a_group_with_lam_zero_sits_out(cls):
    """Its direction is its main gradient; the others see inner products over themselves only."""
    params = _params()
    surgeon = cls([{"params": params[:2]}, {"params": params[2:], "lam": 0.0}], lam=0.4)
    rest = cls(_params()[:2], lam=0.4)
    for step in range(3):
        main, aux = _grads(step)
        d = surgeon.combine(main, aux)
        torch.testing.assert_close(
            flat(d[:2]), flat(rest.combine(main[:2], aux[:2])), rtol=0, atol=0
        )
        for x, m in zip(d[2:], main[2:]):
            assert torch.equal(x, m) and x is not m  # combine returns new tensors
    if cls is Bloop:
        assert surgeon.ema is not None
        assert all(torch.equal(e, torch.zeros_like(e)) for e in surgeon.ema[2:])


def test_a_lam_zero_group_in_backward_gets_its_main_gradient():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    norm = torch.nn.Parameter(torch.tensor([3.0]))
    surgeon = Bloop([{"params": [w]}, {"params": [norm], "lam": 0.0}], lam=1.0)
    main = (w * 2).sum() + norm.sum() * 5
    aux = (w.pow(2).sum() + norm.pow(2).sum()) / 2  # the regulariser the norm is excluded from
    surgeon.backward(main=main, aux=aux)
    assert torch.equal(norm.grad, torch.tensor([5.0]))


def test_group_settings_can_change_between_steps_and_travel_in_the_state_dict():
    params = _params()
    surgeon = Bloop(_groups(params, lam=0.3, rho=0.2), lam=1.0, granularity="group")
    main, aux = _grads(0)
    surgeon.combine(main, aux)
    surgeon.param_groups[0]["lam"] = 0.05  # a per-group schedule, as torch's lr schedulers do
    state = surgeon.state_dict()
    assert state["param_groups"][0]["lam"] == 0.05 and "lam" not in state["param_groups"][1]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = Bloop(_groups(_params(), lam=9.0, rho=0.9), lam=1.0, granularity="group")
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.param_groups[0]["lam"] == 0.05 and fresh.param_groups[0]["rho"] == 0.2
    main, aux = _grads(1)
    assert torch.equal(flat(fresh.combine(main, aux)), flat(surgeon.combine(main, aux)))


def test_a_bad_group_setting_in_a_state_dict_changes_nothing():
    surgeon = Bloop(_groups(_params(), lam=0.3), lam=1.0)
    state = surgeon.state_dict()
    state["param_groups"][0]["lam"] = -1.0
    with pytest.raises(ValueError, match=r"Invalid lam=-1\.0"):
        surgeon.load_state_dict(state)
    assert surgeon.param_groups[0]["lam"] == 0.3
