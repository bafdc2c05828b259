"""``combine`` without ``out=`` reuses the last call's buffers only when the caller let go.

Fresh CPU memory for every direction costs more than the surgery itself at large sizes (page
faults), so the surgeon writes into the last call's tensors when nothing outside it refers to
their memory (see ``torchbloop/surgeons/_reuse.py``). These tests check both halves: the reuse
happens in a loop that drops the directions, and a direction the caller still holds (itself,
a view of it, a ``.grad``, a NumPy array over it) is never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import torchbloop
from torchbloop.methods import METHODS

SHAPES = [(5, 3), (7,), (2, 3, 4, 4)]


def _grads(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    main = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    aux = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    return main, aux


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in SHAPES]


def _assert_equal(got: list[torch.Tensor | None], want: list[torch.Tensor | None]) -> None:
    """Equal lists (a function, so that no loop variable outlives the check and holds one)."""
    for x, y in zip(got, want, strict=True):
        assert (x is None) == (y is None)
        if x is not None and y is not None:
            assert torch.equal(x, y)


def _pointers(ts: list[torch.Tensor | None]) -> list[int]:
    return [t.data_ptr() for t in ts if t is not None]


def test_dropped_directions_are_reused_and_equal_new_ones() -> None:
    reusing, reference = torchbloop.Bloop(_params(), lam=0.7), torchbloop.Bloop(_params(), lam=0.7)
    first = reusing.combine(*_grads(0))
    reference.combine(*_grads(0))
    where = _pointers(first)
    del first
    for step in range(1, 4):
        main, aux = _grads(step)
        want = reference.combine(main, aux, out=[torch.empty_like(t) for t in main])
        got = reusing.combine(main, aux)
        assert _pointers(got) == where  # the same memory, written again
        _assert_equal(got, want)
        del got


@pytest.mark.parametrize(
    "hold",
    [
        lambda d: d,  # the list of directions itself
        lambda d: d[1],  # one direction
        lambda d: d[2][0, 1],  # a view of one
        lambda d: d[0].numpy(),  # a NumPy array over one
    ],
    ids=["list", "one-tensor", "view", "numpy"],
)
def test_held_directions_are_never_overwritten(hold: Callable[[list], object]) -> None:
    surgeon = torchbloop.Bloop(_params(), lam=0.7)
    first = surgeon.combine(*_grads(0))
    kept = hold(first)
    snapshot = [t.clone() for t in first if t is not None]
    where = _pointers(first)
    del first
    second = surgeon.combine(*_grads(1))
    assert set(_pointers(second)).isdisjoint(where)
    assert kept is not None
    if isinstance(kept, list):
        assert all(torch.equal(a, b) for a, b in zip(kept, snapshot))


def test_a_direction_kept_as_grad_is_not_overwritten() -> None:
    params = _params()
    surgeon = torchbloop.Bloop(params, lam=0.7)
    for p, d in zip(params, surgeon.combine(*_grads(0))):
        p.grad = d
    held = [p.grad.clone() for p in params]
    surgeon.combine(*_grads(1))
    assert all(torch.equal(p.grad, h) for p, h in zip(params, held))
    for p in params:  # zero_grad(set_to_none=True) lets go: the next call reuses the memory
        p.grad = None


def test_a_new_layout_gets_new_buffers() -> None:
    surgeon = torchbloop.Mixed(_params(), lam=0.5)
    main, aux = _grads(0)
    first = surgeon.combine(main, aux)
    where = _pointers(first)
    del first
    main[1], aux[1] = None, None  # one parameter without gradients now
    second = surgeon.combine(main, aux)
    assert second[1] is None
    assert set(_pointers(second)).isdisjoint(where)


def test_channels_last_gradients_keep_their_format_when_reused() -> None:
    surgeon = torchbloop.Mixed(_params(), lam=0.5)
    for seed in range(3):
        main, aux = _grads(seed)
        main[2] = main[2].contiguous(memory_format=torch.channels_last)
        aux[2] = aux[2].contiguous(memory_format=torch.channels_last)
        out = surgeon.combine(main, aux)
        assert out[2] is not None
        assert out[2].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out[2], main[2] + 0.5 * aux[2])


@pytest.mark.parametrize("name", [m for m in METHODS if "lam" in METHODS[m].hyperparameters])
def test_every_method_gives_the_same_directions_with_reuse(name: str) -> None:
    """Reused buffers must not change a method's result (e.g. a method reading its output)."""
    info = METHODS[name]
    a = info.factory(_params(), lam=0.3)
    b = info.factory(_params(), lam=0.3)
    for step in range(3):
        main, aux = _grads(10 + step)
        want = b.combine(main, aux, out=[torch.empty_like(t) for t in main])
        got = a.combine(main, aux)
        _assert_equal(got, want)
        del got
