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
