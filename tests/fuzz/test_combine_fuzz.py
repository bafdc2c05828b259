"""``combine`` with bad inputs raises before any change; odd but valid inputs give the plain answer.

Each example corrupts one entry (or the whole list) of the main or auxiliary gradients given to
``surgeon.combine`` of a surgeon that has state. Bad inputs (wrong length, shape, dtype, device,
type; sparse) must raise ``TypeError``/``ValueError`` with NOTHING changed. Inputs that are fine
but unusual (non-contiguous, gradients that require grad or carry a graph) must either raise the
same way or give exactly the direction of the plain inputs, leave the inputs untouched, and put
no autograd graph into the direction or the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _world import NAMES, make_surgeon, snapshot, unchanged
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: the domains are small already
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)


def _grads(params: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]


def _other_shape(g: torch.Tensor) -> torch.Tensor:
    return torch.zeros(g.numel() + 1, dtype=g.dtype)


BAD_ENTRIES: dict[str, Callable[[torch.Tensor], Any]] = {
    "shape": _other_shape,
    "transposed_shape": lambda g: g.reshape(-1, 1) if g.dim() == 1 else g.t().contiguous(),
    "scalar": lambda g: torch.zeros((), dtype=g.dtype),
    "float32": lambda g: g.float(),
    "int64": lambda g: g.long(),
    "complex": lambda g: g.to(torch.complex128),
    "meta_device": lambda g: g.to("meta"),
    "sparse": lambda g: g.to_sparse(),
    "number": lambda g: 1.0,
    "string": lambda g: "grad",
    "numpy": lambda g: g.numpy(),
    "list": lambda g: g.tolist(),
}

BAD_LISTS: dict[str, Callable[[list[Any]], Any]] = {
    "shorter": lambda gs: gs[:-1],
    "longer": lambda gs: [*gs, gs[-1]],
    "empty": lambda gs: [],
    "tensor": lambda gs: gs[0],
    "dict": lambda gs: dict(enumerate(gs)),
    "string": lambda gs: "grads",
    "none": lambda gs: None,
    "set": lambda gs: set(range(len(gs))),
}


def _expect_clean_error(name: str, main: Any, aux: Any) -> None:
    surgeon, params = make_surgeon(name, steps=1)
    before = snapshot(surgeon, params)
    with pytest.raises((TypeError, ValueError)):
        surgeon.combine(main, aux)
    assert unchanged(before, surgeon, params), "a failed combine changed the surgeon"


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(
    kind=st.sampled_from(sorted(BAD_ENTRIES)),
    which=st.sampled_from(["main", "aux"]),
    index=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_bad_entry_raises_before_any_change(
    name: str, kind: str, which: str, index: int, seed: int
) -> None:
    params = make_surgeon(name, steps=0)[1]
    main, aux = _grads(params, seed), _grads(params, seed + 1)
    target = main if which == "main" else aux
    target[index] = BAD_ENTRIES[kind](target[index])
    _expect_clean_error(name, main, aux)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(
    kind=st.sampled_from(sorted(BAD_LISTS)),
    which=st.sampled_from(["main", "aux"]),
    seed=st.integers(0, 2**16),
)
def test_bad_list_raises_before_any_change(name: str, kind: str, which: str, seed: int) -> None:
    params = make_surgeon(name, steps=0)[1]
    main, aux = _grads(params, seed), _grads(params, seed + 1)
    if which == "main":
        main = BAD_LISTS[kind](main)
    else:
        aux = BAD_LISTS[kind](aux)
    _expect_clean_error(name, main, aux)


def _strided(g: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(*g.shape[:-1], g.shape[-1] * 2, dtype=g.dtype)[..., ::2]
    out.copy_(g)
    assert not out.is_contiguous()
    return out


def _requires_grad_leaf(g: torch.Tensor) -> torch.Tensor:
    return g.clone().requires_grad_(True)


def _with_graph(g: torch.Tensor) -> torch.Tensor:
    w = torch.ones((), dtype=g.dtype, requires_grad=True)
    return g * w  # equal values, and a grad_fn


ODD_ENTRIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "non_contiguous": _strided,
    "requires_grad_leaf": _requires_grad_leaf,
    "with_graph": _with_graph,
}


def _odd_cases() -> list[Any]:
    cases = []
    for name in NAMES:
        for kind in ODD_ENTRIES:
            cases.append(pytest.param(name, kind, id=f"{name}-{kind}"))
    return cases


@pytest.mark.parametrize(("name", "kind"), _odd_cases())
@FUZZ
@given(
    which=st.sampled_from(["main", "aux", "both"]),
    index=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_odd_but_valid_entry_gives_the_plain_answer(
    name: str, kind: str, which: str, index: int, seed: int
) -> None:
    surgeon, params = make_surgeon(name, steps=1)
    twin, _ = make_surgeon(name, steps=1)  # the same surgeon, fed plain inputs
    main, aux = _grads(params, seed), _grads(params, seed + 1)
    odd_main, odd_aux = list(main), list(aux)
    if which in ("main", "both"):
        odd_main[index] = ODD_ENTRIES[kind](main[index])
    if which in ("aux", "both"):
        odd_aux[index] = ODD_ENTRIES[kind](aux[index])
    inputs_before = [g.detach().clone() for g in (*odd_main, *odd_aux)]
    before = snapshot(surgeon, params)
    try:
        directions = surgeon.combine(odd_main, odd_aux)
    except (TypeError, ValueError):
        assert unchanged(before, surgeon, params)
        return
    expected = twin.combine(main, aux)
    for d, e in zip(directions, expected):
        assert d is not None and e is not None
        assert not d.requires_grad and d.grad_fn is None, "the direction carries a graph"
        torch.testing.assert_close(d, e, rtol=0, atol=0)
    for t in getattr(surgeon, "ema", None) or []:
        assert not t.requires_grad and t.grad_fn is None, "the state carries a graph"
    for g, b in zip((*odd_main, *odd_aux), inputs_before):
        assert torch.equal(g.detach(), b), "combine modified its input"
    assert surgeon.step_count == twin.step_count
    if getattr(surgeon, "ema", None) is not None:
        for a, b in zip(surgeon.ema, twin.ema):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
