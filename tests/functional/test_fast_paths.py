"""Every fast path equals its slow ``_reference`` twin: foreach on and off, every ``out``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _asserts import assert_close, assert_same_layout, flat, gradient_triples, norm, rtol_for
from torchbloop.functional import (
    bloop_direction,
    bloop_direction_reference,
    dynamic_barrier_direction,
    dynamic_barrier_direction_reference,
    ema_update_,
    ema_update_reference,
    global_dots,
    global_dots_reference,
    mixed_direction,
    mixed_direction_reference,
    pcgrad_direction,
    pcgrad_direction_reference,
)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


def _clone(xs):
    return [x.clone() for x in xs]


FAST = {
    "bloop": lambda m, a, e, lam, **kw: bloop_direction(m, a, e, lam=lam, **kw).direction,
    "mixed": lambda m, a, e, lam, **kw: mixed_direction(m, a, lam=lam, **kw),
    "pcgrad": lambda m, a, e, lam, **kw: pcgrad_direction(m, a, lam=lam, **kw),
    "dynamic_barrier": lambda m, a, e, lam, **kw: dynamic_barrier_direction(m, a, lam=lam, **kw),
}
REFERENCE = {
    "bloop": lambda m, a, e, lam: bloop_direction_reference(m, a, e, lam=lam),
    "mixed": lambda m, a, e, lam: mixed_direction_reference(m, a, lam=lam),
    "pcgrad": lambda m, a, e, lam: pcgrad_direction_reference(m, a, lam=lam),
    "dynamic_barrier": lambda m, a, e, lam: dynamic_barrier_direction_reference(m, a, lam=lam),
}


@pytest.mark.parametrize("out", ["none", "aux", "main", "fresh"])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", sorted(FAST))
@SETTINGS
@given(gradient_triples())
def test_direction_fast_path_equals_reference(name, foreach, out, triple):
    main, aux, ema, lam = triple
    expected = REFERENCE[name](main, aux, ema, lam)
    main_in, aux_in, ema_in = _clone(main), _clone(aux), _clone(ema)
    target = {"none": None, "aux": aux_in, "main": main_in, "fresh": _clone(main)}[out]
    d = FAST[name](main_in, aux_in, ema_in, lam, out=target, foreach=foreach)
    assert_same_layout(d, main)
    if target is not None:
        assert all(x is y for x, y in zip(d, target)), "the result must be written into out"
    atol = rtol_for(main[0].dtype) * 10 * (norm(main) + lam * norm(aux)) + 1e-300
    assert_close(d, expected, atol=atol, what=f"{name} foreach={foreach} out={out}")
    # Inputs other than `out` are left as they were.
    assert all(torch.equal(x, y) for x, y in zip(ema_in, ema))
    if out != "main":
        assert all(torch.equal(x, y) for x, y in zip(main_in, main))
    if out != "aux":
        assert all(torch.equal(x, y) for x, y in zip(aux_in, aux))


@SETTINGS
@given(gradient_triples())
def test_global_dots_equals_reference(triple):
    main, aux, ema, _ = triple
    pairs = [(main, aux), (ema, ema), (aux, ema), (main, main)]
    fast = global_dots(pairs)
    ref = global_dots_reference(pairs)
    assert fast.shape == (4,)
    assert fast.dtype == main[0].dtype  # float32 stays float32, float64 stays float64
    for k, (a, b) in enumerate(pairs):
        bound = rtol_for(main[0].dtype) * 10 * norm(a) * norm(b) + 1e-300
        assert abs(float(fast[k]) - float(ref[k])) <= bound


def test_global_dots_accumulates_low_precision_in_float32():
    # 4096 ones in bfloat16: a bf16 accumulator would stall at 256.
    xs = [torch.ones(4096, dtype=torch.bfloat16)]
    out = global_dots([(xs, xs)])
    assert out.dtype == torch.float32
    assert float(out[0]) == 4096.0


def test_global_dots_reduce_hook_is_applied_once():
    calls = []

    def reduce(v):
        calls.append(v.clone())
        return v * 2

    a = [torch.tensor([1.0, 2.0]), torch.tensor(3.0)]
    out = global_dots([(a, a), (a, [torch.ones(2), torch.tensor(0.0)])], reduce=reduce)
    assert len(calls) == 1 and torch.equal(calls[0], torch.tensor([14.0, 3.0]))
    assert torch.equal(out, torch.tensor([28.0, 6.0]))


@pytest.mark.parametrize("foreach", [True, False])
@SETTINGS
@given(gradient_triples(), st.sampled_from([1e-3, 0.01, 0.5, 1.0]))
def test_ema_update_equals_reference(foreach, triple, rho):
    main, _, ema, _ = triple
    expected = ema_update_reference(ema, main, rho=rho)
    ema_in = _clone(ema)
    ema_update_(ema_in, main, rho=rho, foreach=foreach)
    assert_same_layout(ema_in, ema)
    atol = rtol_for(main[0].dtype) * 10 * (norm(ema) + norm(main)) + 1e-300
    assert_close(ema_in, expected, atol=atol, what=f"ema_update_ foreach={foreach}")
    if rho == 1.0:
        assert_close(ema_in, main, atol=atol, what="rho=1 replaces the EMA")


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", sorted(FAST))
def test_bfloat16_gradients_with_float32_ema(name, foreach):
    shapes = [(8, 4), (4,), ()]
    gen = torch.Generator().manual_seed(5)
    main = [torch.randn(s, generator=gen).bfloat16() for s in shapes]
    aux = [torch.randn(s, generator=gen).bfloat16() for s in shapes]
    ema = [torch.randn(s, generator=gen) for s in shapes]
    lam = 0.8
    d = FAST[name](main, aux, ema, lam, foreach=foreach)
    assert all(x.dtype == torch.bfloat16 for x in d)
    # Reference on the same (bf16-rounded) inputs, in float64.
    ref = flat(REFERENCE[name](main, aux, ema, lam))
    assert_close(d, ref, atol=0.02 * (norm(main) + lam * norm(aux)), what="bf16")


@pytest.mark.parametrize("foreach", [True, False])
def test_ema_update_keeps_float32_ema_for_bfloat16_gradients(foreach):
    ema = [torch.full((3,), 1.0), torch.tensor(2.0)]
    grads = [torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16), torch.tensor(0.0).bfloat16()]
    ema_update_(ema, grads, rho=0.25, foreach=foreach)
    assert all(e.dtype == torch.float32 for e in ema)
    assert torch.equal(ema[0], torch.tensor([1.0, 1.25, 1.5]))
    assert torch.equal(ema[1], torch.tensor(1.5))
