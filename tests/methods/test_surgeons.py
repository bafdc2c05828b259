"""The six Table-1 surgeons: ``backward`` and ``combine`` against the float64 references over a
few steps (state carried), state dicts (bit-exact round trip through ``weights_only`` loading,
validated before any change), the main loss value of the original Dynamic Barrier (accumulation,
``combine``), and the expected errors."""

from __future__ import annotations

import io

import pytest
import torch
from _method_props import assert_vec_close, budget, flat, norm

from torchbloop.functional.agem import agem_direction_reference
from torchbloop.functional.cosine_gating import cosine_gating_direction_reference
from torchbloop.functional.gradvac import gradvac_direction_reference
from torchbloop.functional.metabalance import metabalance_direction_reference
from torchbloop.functional.mgda import mgda_direction_reference
from torchbloop.functional.original_dynamic_barrier import (
    original_dynamic_barrier_direction_reference,
)
from torchbloop.surgeons.agem import AGEM
from torchbloop.surgeons.cosine_gating import CosineGating
from torchbloop.surgeons.gradvac import GradVac
from torchbloop.surgeons.metabalance import MetaBalance
from torchbloop.surgeons.mgda import MGDA
from torchbloop.surgeons.original_dynamic_barrier import OriginalDynamicBarrier

SHAPES = ((3, 2), (4,), ())


def params(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]


def losses(ps, step: int):
    """A main and an aux loss with step-dependent data (their gradients conflict at times)."""
    gen = torch.Generator().manual_seed(100 + step)
    x = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ps]
    y = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ps]
    main = sum(((p - a) ** 2).sum() for p, a in zip(ps, x)) / 2
    aux = sum((p * b).sum() + (p**2).sum() for p, b in zip(ps, y))
    return main, aux


def grads_of(ps, loss):
    return [g.detach().clone() for g in torch.autograd.grad(loss, ps, retain_graph=True)]


class Ref:
    """The float64 references with their state, stepping along with a surgeon."""

    def __init__(self, name: str, hp: dict) -> None:
        self.name, self.hp = name, hp
        self.phi_hat = 0.0
        self.norms = [(0.0, 0.0)] * len(SHAPES)

    def step(self, g_m, g_a, loss_value: float):
        hp = self.hp
        if self.name == "agem":
            return agem_direction_reference(g_m, g_a, lam=hp["lam"])
        if self.name == "mgda":
            return mgda_direction_reference(g_m, g_a, lam=hp["lam"])
        if self.name == "cosine_gating":
            return cosine_gating_direction_reference(g_m, g_a, **hp)
        if self.name == "gradvac":
            d, self.phi_hat = gradvac_direction_reference(g_m, g_a, phi_hat=self.phi_hat, **hp)
            return d
        if self.name == "metabalance":
            d, self.norms = metabalance_direction_reference(g_m, g_a, norms=self.norms, **hp)
            return d
        return original_dynamic_barrier_direction_reference(g_m, g_a, main_loss=loss_value, **hp)


CASES = {
    "agem": (AGEM, {"lam": 0.7}),
    "mgda": (MGDA, {"lam": 0.3}),
    "cosine_gating": (CosineGating, {"lam": 0.7, "weighted": True}),
    "cosine_gating_unweighted": (CosineGating, {"lam": 0.7, "weighted": False}),
    "gradvac": (GradVac, {"lam": 0.7, "beta": 0.3}),
    "metabalance": (MetaBalance, {"r": 0.6, "beta": 0.5}),
    "original_dynamic_barrier": (
        OriginalDynamicBarrier,
        {"alpha": 0.5, "beta": 2.0, "lower_bound": -1.0},
    ),
}


def _ref(name):
    _, hp = CASES[name]
    return Ref(name.replace("_unweighted", ""), hp)


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_follows_the_reference(name):
    """Five steps of ``backward`` write the reference direction into ``.grad`` (state carried)."""
    cls, hp = CASES[name]
    ps = params()
    surgeon, ref = cls(ps, **hp), _ref(name)
    for step in range(5):
        main, aux = losses(ps, step)
        g_m, g_a = grads_of(ps, main), grads_of(ps, aux)
        expected = ref.step(g_m, g_a, float(main.detach()))
        surgeon.backward(main, aux)
        got = [p.grad for p in ps]
        assert_vec_close(got, expected, budget(torch.float64, norm(g_m), 10 * norm(g_a)), name)
    assert surgeon.step_count == 5


@pytest.mark.parametrize("name", sorted(CASES))
def test_combine_equals_backward(name):
    cls, hp = CASES[name]
    ps = params()
    a, b = cls(ps, **hp), cls(ps, **hp)
    for step in range(3):
        main, aux = losses(ps, step)
        g_m, g_a = grads_of(ps, main), grads_of(ps, aux)
        extra = {"main_loss": main.detach()} if name == "original_dynamic_barrier" else {}
        d = b.combine(g_m, g_a, **extra)
        a.backward(main, aux)
        for p, t in zip(ps, d):
            assert torch.equal(p.grad, t)


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_round_trip_is_bit_exact(name):
    """Three steps, save (``weights_only`` loadable), load into a fresh surgeon, two more
    steps on both: the same directions and the same state, bit for bit."""
    cls, hp = CASES[name]
    ps = params()
    a = cls(ps, **hp)
    for step in range(3):
        a.backward(*losses(ps, step))
    b = cls(ps, **hp)
    b.load_state_dict(_roundtrip(a.state_dict()))
    assert b.hyperparameters() == a.hyperparameters()
    for step in range(3, 5):
        a.backward(*losses(ps, step))
        ga = [p.grad.clone() for p in ps]
        b.backward(*losses(ps, step))
        assert all(torch.equal(x, p.grad) for x, p in zip(ga, ps))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in ("scalars",):
        if key in sa:
            for k in sa[key]:
                assert torch.equal(sa[key][k], sb[key][k])


@pytest.mark.parametrize(
    ("name", "key", "bad"),
    [
        ("gradvac", "phi_hat", torch.tensor(1.5, dtype=torch.float64)),
        ("gradvac", "phi_hat", torch.zeros(2, dtype=torch.float64)),
        ("metabalance", "norm_main", torch.zeros(2, dtype=torch.float64)),
        ("metabalance", "norm_aux", torch.full((3,), -1.0, dtype=torch.float64)),
    ],
)
def test_bad_scalar_state_is_refused_before_any_change(name, key, bad):
    cls, hp = CASES[name]
    ps = params()
    a = cls(ps, **hp)
    a.backward(*losses(ps, 0))
    before = a.state_dict()
    sd = a.state_dict()
    sd["scalars"][key] = bad
    sd["step"] = 99
    with pytest.raises(ValueError, match="Invalid state_dict"):
        a.load_state_dict(sd)
    after = a.state_dict()
    assert after["step"] == before["step"]
    for k in before["scalars"]:
        assert torch.equal(after["scalars"][k], before["scalars"][k])


def test_missing_scalar_state_is_refused():
    ps = params()
    sd = GradVac(ps, lam=1.0).state_dict()
    del sd["scalars"]
    with pytest.raises(ValueError, match="scalars"):
        GradVac(ps, lam=1.0).load_state_dict(sd)


def test_dynamic_barrier_accumulation_sums_the_loss():
    """Two micro-batches (each loss halved) give the direction of one call on the whole batch:
    gradients AND the main loss value are summed."""
    hp = CASES["original_dynamic_barrier"][1]
    ps = params()
    whole = OriginalDynamicBarrier(ps, **hp)
    m1, a1 = losses(ps, 1)
    m2, a2 = losses(ps, 2)
    whole.backward((m1 + m2) / 2, (a1 + a2) / 2)
    expected = [p.grad.clone() for p in ps]
    parts = OriginalDynamicBarrier(ps, **hp)
    m1, a1 = losses(ps, 1)
    parts.backward(m1 / 2, a1 / 2, accumulate=True)
    m2, a2 = losses(ps, 2)
    parts.backward(m2 / 2, a2 / 2)
    for p, e in zip(ps, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-12)


def test_dynamic_barrier_combine_needs_the_loss():
    ps = params()
    s = OriginalDynamicBarrier(ps)
    g = [torch.ones_like(p) for p in ps]
    with pytest.raises(ValueError, match="main_loss"):
        s.combine(g, g)
    assert s.step_count == 0
    d = s.combine(g, g, main_loss=3.0)  # <g_a, g_m> = 11 >= phi = min(3, 11): d = g_a
    assert all(torch.equal(x, y) for x, y in zip(d, g))
    minus = [-t for t in g]
    d = s.combine(g, minus, main_loss=torch.tensor(3.0))  # conflict: <d, g_m> = phi = 3
    assert abs(float(flat(d) @ flat(g)) - 3.0) < 1e-5


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda ps: AGEM(ps, lam=-1.0), ValueError, "lam"),
        (lambda ps: AGEM(ps, lam=[1.0, 1.0]), ValueError, "at most 1"),
        (lambda ps: MGDA(ps, lam=[1.0] * 8), ValueError, "at most 7"),
        (lambda ps: CosineGating(ps, lam=1.0, weighted=1), TypeError, "weighted"),
        (lambda ps: GradVac(ps, lam=1.0, beta=0.0), ValueError, "beta"),
        (lambda ps: GradVac(ps, lam=1.0, beta="0.1"), TypeError, "beta"),
        (lambda ps: MetaBalance(ps, r=1.5), ValueError, r"r=1.5"),
        (lambda ps: MetaBalance(ps, beta=1.0), ValueError, "beta"),
        (lambda ps: OriginalDynamicBarrier(ps, alpha=0.0), ValueError, "alpha"),
        (lambda ps: OriginalDynamicBarrier(ps, beta=float("inf")), ValueError, "beta"),
        (
            lambda ps: OriginalDynamicBarrier(ps, lower_bound=float("nan")),
            ValueError,
            "lower_bound",
        ),
    ],
)
def test_expected_errors(make, error, match):
    with pytest.raises(error, match=match):
        make(params())


def test_mgda_several_aux_losses():
    """``lam`` a list: K aux losses; the direction is the reference's min-norm point."""
    ps = params()
    s = MGDA(ps, lam=[0.5, 2.0])
    main, aux = losses(ps, 0)
    aux2 = sum((p**3).sum() for p in ps)
    g = [grads_of(ps, x) for x in (main, aux, aux2)]
    s.backward(main, [aux, aux2])
    ref = mgda_direction_reference(g[0], g[1:], lam=[0.5, 2.0])
    assert_vec_close([p.grad for p in ps], ref, 1e-6 * norm(g[2]), "MGDA K=2")


def test_gradvac_target_follows_the_cosines():
    """The target is the EMA of the cosines seen (from 0), whatever the adjustments."""
    ps = params()
    s = GradVac(ps, lam=1.0, beta=0.3)
    target = 0.0
    for step in range(4):
        main, aux = losses(ps, step)
        m, a = flat(grads_of(ps, main)), flat(grads_of(ps, aux))
        cos = float(m @ a) / float(m.norm() * a.norm())
        target = 0.7 * target + 0.3 * cos
        s.backward(main, aux)
        assert abs(float(s.phi_hat) - target) < 1e-14


def test_per_group_lam_is_refused_where_there_is_no_lam():
    """MetaBalance and the original barrier have no ``lam``: a parameter group's own ``lam``
    is an error, not silently ignored."""
    ps = params()
    groups = [{"params": ps[:1], "lam": 0.5}, {"params": ps[1:]}]
    with pytest.raises(ValueError, match="no 'lam'"):
        MetaBalance(groups).backward(*losses(ps, 0))
    with pytest.raises(ValueError, match="no 'lam'"):
        OriginalDynamicBarrier(groups).backward(*losses(ps, 0))


def test_metabalance_uses_per_tensor_norms_with_parameter_groups():
    """Two parameter groups: the direction is still the per-tensor reference."""
    ps = params()
    s = MetaBalance([{"params": ps[:1]}, {"params": ps[1:]}], r=0.6, beta=0.5)
    ref = Ref("metabalance", {"r": 0.6, "beta": 0.5})
    for step in range(3):
        main, aux = losses(ps, step)
        expected = ref.step(grads_of(ps, main), grads_of(ps, aux), 0.0)
        s.backward(main, aux)
        assert_vec_close([p.grad for p in ps], expected, 1e-12 * norm(expected), "groups")
