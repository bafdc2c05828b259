"""Edge cases of the surgeon plumbing found in review."""

from __future__ import annotations

import pytest
import torch

import torchbloop


def test_nonfinite_final_micro_batch_says_pending_were_discarded() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    surgeon = torchbloop.Bloop([w], lam=0.5)
    surgeon.backward(main=w.sum(), aux=w.pow(2).sum(), accumulate=True)
    bad = w.sum() * torch.tensor(float("inf"))
    with pytest.raises(
        torchbloop.NonFiniteGradientError, match="pending micro-batches were discarded"
    ):
        surgeon.backward(main=bad, aux=w.pow(2).sum())
    assert w.grad is None and surgeon.ema is None and surgeon.step_count == 0
    assert not surgeon.pending_micro_batches


@pytest.mark.parametrize("frozen", [True, False], ids=["all-frozen", "another-model"])
def test_losses_that_reach_no_parameter_are_refused(frozen: bool) -> None:
    """Issue 11: this used to count as a step (step_count 1) in which nothing happened."""
    w = torch.nn.Parameter(torch.ones(2), requires_grad=not frozen)
    other = torch.ones(2, requires_grad=True)
    surgeon = torchbloop.Bloop([w], lam=1.0)
    with pytest.raises(ValueError, match=r"^Invalid main and aux loss: it reaches none"):
        surgeon.backward(main=(other * 2).sum(), aux=other.sum())
    assert w.grad is None and surgeon.step_count == 0 and surgeon.ema is None


def test_one_loss_that_reaches_no_parameter_is_named() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    w.grad = torch.full((2,), 5.0)
    other = torch.ones(2, requires_grad=True)
    surgeon = torchbloop.Bloop([w], lam=1.0)
    with pytest.raises(ValueError, match=r"^Invalid aux loss: .*allow_unused=True"):
        surgeon.backward(main=w.sum(), aux=other.sum())
    assert torch.equal(w.grad, torch.full((2,), 5.0)) and surgeon.step_count == 0
    surgeon.backward(main=w.sum(), aux=other.sum(), allow_unused=True)  # the documented flag
    assert torch.equal(w.grad, torch.ones(2)) and surgeon.step_count == 1


def test_huge_finite_gradients_are_not_mistaken_for_overflow() -> None:
    """Their sum of squares overflows float32 (the fast check says no); the exact check says yes."""
    w = torch.nn.Parameter(torch.ones(4))
    surgeon = torchbloop.Mixed([w], lam=1.0)
    surgeon.backward(main=(w * 1e20).sum(), aux=w.sum())
    assert w.grad is not None and torch.isfinite(w.grad).all()
    assert surgeon.step_count == 1 and surgeon.skipped_steps == 0


@pytest.mark.parametrize("method", ["Bloop", "Mixed", "PCGrad", "DynamicBarrier"])
def test_grad_keeps_the_channels_last_memory_format(method: str) -> None:
    """Issue 11: ``.grad`` used to come back contiguous for a channels_last parameter."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    twin = torch.nn.Conv2d(3, 4, 3)
    twin.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 6, 6)
    directions = []
    for model in (conv, twin):
        surgeon = getattr(torchbloop, method)(model.parameters(), lam=0.3)
        out = model(x)
        surgeon.backward(main=out.pow(2).mean(), aux=model.weight.sum() ** 2 + out.mean())
        directions.append(model.weight.grad)
    assert directions[0] is not None and directions[1] is not None
    assert directions[0].is_contiguous(memory_format=torch.channels_last)
    assert not directions[0].is_contiguous()
    torch.testing.assert_close(directions[0], directions[1], rtol=1e-5, atol=1e-6)


def test_combine_detaches_gradients_that_require_grad() -> None:
    """Issue 11: the EMA used to get a grad_fn from such inputs (the graph grew every step)."""
    w = torch.nn.Parameter(torch.ones(3))
    surgeon = torchbloop.Bloop([w], lam=0.5, rho=0.5)
    for _ in range(3):
        main = torch.randn(3, requires_grad=True) * 2  # a non-leaf that requires grad
        aux = torch.randn(3, requires_grad=True)
        (d,) = surgeon.combine([main], [aux])
        assert d is not None and d.grad_fn is None and not d.requires_grad
    assert surgeon.ema is not None
    assert surgeon.ema[0].grad_fn is None and not surgeon.ema[0].requires_grad


def test_diagnostics_of_a_skipped_step_say_so() -> None:
    """Issue 11: a skipped step used to leave the previous step's diagnostics in place."""
    w = torch.nn.Parameter(torch.ones(3))
    surgeon = torchbloop.Bloop([w], lam=0.5, nonfinite="skip", diagnostics=True)
    surgeon.combine([torch.ones(3)], [torch.arange(3.0)])
    first = surgeon.diagnostics
    assert first is not None and not bool(first.step_skipped)
    surgeon.combine([torch.full((3,), float("nan"))], [torch.ones(3)])
    diag = surgeon.diagnostics
    assert diag is not first and diag is not None
    assert bool(diag.step_skipped) and bool(diag.skipped) and torch.isnan(diag.coef)
    assert surgeon.skipped_steps == 1 and surgeon.step_count == 1
    surgeon.combine([torch.ones(3)], [torch.arange(3.0)])
    assert surgeon.diagnostics is not None and not bool(surgeon.diagnostics.step_skipped)


@pytest.mark.parametrize("method", ["Bloop", "Mixed", "PCGrad", "DynamicBarrier"])
def test_combine_into_out_equals_combine_into_new_tensors(method: str) -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 2), (4,)]
    main = [torch.randn(s, generator=gen) for s in shapes]
    aux = [torch.randn(s, generator=gen) for s in shapes]
    copies = [t.clone() for t in main + aux]
    fresh = getattr(torchbloop, method)(
        [torch.nn.Parameter(torch.zeros(s)) for s in shapes], lam=0.3
    )
    into = getattr(torchbloop, method)(
        [torch.nn.Parameter(torch.zeros(s)) for s in shapes], lam=0.3
    )
    out = [torch.full(s, 7.0) for s in shapes]
    for _ in range(3):
        expected = fresh.combine(main, aux)
        got = into.combine(main, aux, out=out)
        assert all(g is o for g, o in zip(got, out))
        assert all(torch.equal(g, e) for g, e in zip(got, expected))  # type: ignore[arg-type]
    assert all(torch.equal(t, c) for t, c in zip(main + aux, copies))  # inputs untouched
    with pytest.raises(ValueError, match=r"Invalid out\[0\]: shape \(2, 3\)"):
        into.combine(main, aux, out=[torch.zeros(2, 3), torch.zeros(4)])
