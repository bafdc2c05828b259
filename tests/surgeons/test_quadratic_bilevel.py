"""Bloop solves the simple bilevel problem of method.md section 5, experiment 3; Mixed does not.

Main loss: least squares with more parameters than samples (p = 60 > n = 40, realisable), so its
minimisers form the affine set {theta : X theta = y}. Aux loss: ||theta - theta*||^2 / 2. The
bilevel optimum (min aux over the minimisers of main) is the projection of theta* on that set:
theta_bl = theta* - pinv(X) (X theta* - y). Plain SGD on mini-batches of 10, lr 0.02, 1000 steps,
lam = 1 for both methods.

Seen when this test was written (seed 0, float64; relative distance ||theta - theta_bl|| /
||theta_bl||, full-batch main loss): Bloop 0.090 / 0.058, Mixed 0.604 / 9.63; theta* itself is at
1.07 from theta_bl. The margins below are generous.
"""

from __future__ import annotations

import torch

from torchbloop import Bloop, Mixed

N, P, BATCH, STEPS, LR, LAM = 40, 60, 10, 1000, 0.02, 1.0


def _problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, P, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(P, generator=gen, dtype=torch.float64)
    theta_star = torch.randn(P, generator=gen, dtype=torch.float64)
    theta_bl = theta_star - torch.linalg.pinv(x) @ (x @ theta_star - y)
    return x, y, theta_star, theta_bl


def _train(surgeon_cls, **kw):
    x, y, theta_star, theta_bl = _problem()
    theta = torch.nn.Parameter(torch.zeros(P, dtype=torch.float64))
    surgeon = surgeon_cls([theta], lam=LAM, **kw)
    opt = torch.optim.SGD([theta], lr=LR)
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        idx = torch.randint(0, N, (BATCH,), generator=gen)
        main = 0.5 * ((x[idx] @ theta - y[idx]) ** 2).mean()
        aux = 0.5 * ((theta - theta_star) ** 2).sum()
        opt.zero_grad()
        surgeon.backward(main=main, aux=aux)
        opt.step()
    with torch.no_grad():
        distance = float((theta - theta_bl).norm() / theta_bl.norm())
        main_loss = float(0.5 * ((x @ theta - y) ** 2).mean())
    return distance, main_loss


def test_closed_form_is_the_bilevel_optimum():
    x, y, theta_star, theta_bl = _problem()
    assert torch.allclose(x @ theta_bl, y, atol=1e-9)  # feasible: a minimiser of the main loss
    # theta* - theta_bl is orthogonal to the null space of X (it lies in X's row space).
    null = torch.linalg.svd(x, full_matrices=True).Vh[N:]
    assert float((null @ (theta_star - theta_bl)).norm()) < 1e-9
    assert float((theta_star - theta_bl).norm()) > 1.0  # and the two losses do conflict


def test_bloop_reaches_the_bilevel_optimum_and_mixed_does_not():
    bloop_distance, bloop_main = _train(Bloop, rho=0.01)
    mixed_distance, mixed_main = _train(Mixed)
    assert bloop_distance < 0.25, bloop_distance
    assert mixed_distance > 0.4, mixed_distance
    assert bloop_main < 1.0 < mixed_main, (bloop_main, mixed_main)
