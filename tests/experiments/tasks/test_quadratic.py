"""The quadratic experiment: closed-form optimum and Bloop vs Mixed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from torchbloop.experiments.sweep.registry import RunSpec
from torchbloop.experiments.sweep.training import torch_threads
from torchbloop.experiments.tasks import quadratic


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):  # tiny problem: threads only add overhead
        yield


def test_closed_form_bilevel_optimum() -> None:
    prob = quadratic.Problem(0)
    opt = prob.theta_opt
    # feasible for the main problem (interpolates the training data) ...
    assert torch.allclose(prob.X @ opt, prob.y, atol=1e-8)
    # ... and the closest such point to theta*: the difference lies in the row space of X
    diff = opt - prob.theta_star
    coef = torch.linalg.lstsq(prob.X.T, diff.unsqueeze(1)).solution
    assert torch.allclose(prob.X.T @ coef.squeeze(1), diff, atol=1e-8)
    m = prob.metrics(opt)
    assert m["train_main"] < 1e-12 and m["dist_to_bilevel_opt"] == 0.0


def test_bloop_gets_closer_to_the_bilevel_optimum_than_mixed() -> None:
    def final(method: str) -> dict[str, float]:
        spec = RunSpec("quadratic", method, 1.0, 0.01, 0, "default")
        return quadratic.run(spec, steps=1500)["final"]

    bloop, mixed = final("bloop"), final("mixed")
    # measured (seed 0, 1500 steps): Bloop ~8, Mixed ~12.7; Mixed's limit at lam = 1 is biased
    assert bloop["dist_to_bilevel_opt"] < 0.8 * mixed["dist_to_bilevel_opt"]
    assert bloop["train_main"] < 0.5 * mixed["train_main"]
