"""The authors' quadratic: over-parameterised least squares vs distance to a random point.

main ``L_main(theta) = ||X theta - y||^2 / (2 n)`` with ``X`` (n = 256, p = 300) Gaussian,
``y = X theta_0 + 0.1 noise``; aux ``L_aux(theta) = ||theta - theta*||^2 / 2`` with a random
``theta*``. Since p > n, ``argmin L_main`` is the affine set ``{X theta = y}`` and the bilevel
optimum is the projection of ``theta*`` onto it: ``theta_opt = theta* - X^+ (X theta* - y)``
(float64, pseudo-inverse). SGD, lr 1e-3, batch 64, theta starts at 0, float64 throughout.
"Eval" main loss: the same loss on 1024 fresh samples of the same distribution (aux is the
same function on train and eval). Data, theta* and the batch order depend on the seed only,
so every method and lam sees the same problem and the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.plots import metric_vs_lam_plot
from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import set_seed, torch_threads, train

N_SAMPLES, N_PARAMS, N_EVAL = 256, 300, 1024
NOISE = 0.1
LR, BATCH = 1e-3, 64
STEPS = {"smoke": 2_000, "default": 20_000, "paper": 100_000}
EVAL_POINTS = {"smoke": 20, "default": 60, "paper": 100}
LAMS_PAPER = (0.0, *np.logspace(-3, 3, 10).tolist())


class Problem:
    """Data and closed-form quantities of one seed (float64)."""

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(10_000 + seed)
        kw: dict[str, Any] = {"generator": g, "dtype": torch.float64}
        self.X = torch.randn(N_SAMPLES, N_PARAMS, **kw)
        theta0 = torch.randn(N_PARAMS, **kw)
        self.y = self.X @ theta0 + NOISE * torch.randn(N_SAMPLES, **kw)
        self.X_eval = torch.randn(N_EVAL, N_PARAMS, **kw)
        self.y_eval = self.X_eval @ theta0 + NOISE * torch.randn(N_EVAL, **kw)
        self.theta_star = torch.randn(N_PARAMS, **kw)
        residual = self.X @ self.theta_star - self.y
        self.theta_opt = self.theta_star - torch.linalg.pinv(self.X) @ residual

    def main(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``||X theta - y||^2 / (2 len(y))``."""
        return 0.5 * torch.mean((X @ theta - y) ** 2)

    def aux(self, theta: torch.Tensor) -> torch.Tensor:
        """``||theta - theta*||^2 / 2``."""
        return 0.5 * torch.sum((theta - self.theta_star) ** 2)

    def metrics(self, theta: torch.Tensor) -> dict[str, float]:
        """The four losses and the distance to the bilevel optimum at ``theta``."""
        aux = float(self.aux(theta))
        return {
            "train_main": float(self.main(theta, self.X, self.y)),
            "train_aux": aux,
            "eval_main": float(self.main(theta, self.X_eval, self.y_eval)),
            "eval_aux": aux,
            "dist_to_bilevel_opt": float(torch.linalg.vector_norm(theta - self.theta_opt)),
        }


class Linear(torch.nn.Module):
    """The model: a parameter vector theta (starts at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(N_PARAMS, dtype=torch.float64))


def _batches(prob: Problem, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled epochs of ``(X_batch, y_batch)``; the order depends on ``seed`` only."""
    g = torch.Generator().manual_seed(20_000 + seed)
    while True:
        perm = torch.randperm(N_SAMPLES, generator=g)
        yield from zip(prob.X[perm].split(BATCH), prob.y[perm].split(BATCH))


def _run(spec: RunSpec, steps: int | None = None) -> Record:
    """One SGD run of ``spec.method`` at ``spec.lam`` (``steps`` overrides the budget's)."""
    set_seed(spec.seed)
    prob = Problem(spec.seed)
    model = Linear()
    steps = steps if steps is not None else STEPS[spec.budget]
    record = train(
        spec,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=LR),
        batches=_batches(prob, spec.seed),
        main_loss=lambda m, batch: prob.main(model.theta, *batch),
        aux_loss=lambda m, batch: prob.aux(model.theta),
        steps=steps,
        evaluate=lambda: prob.metrics(model.theta.detach()),
        eval_every=max(1, steps // EVAL_POINTS[spec.budget]),
        config={
            "n": N_SAMPLES,
            "p": N_PARAMS,
            "n_eval": N_EVAL,
            "noise": NOISE,
            "lr": LR,
            "batch": BATCH,
            "steps": steps,
            "optimizer": "SGD",
            "init": "zeros",
            "dtype": "float64",
        },
    )
    record["extra"]["optimum"] = prob.metrics(prob.theta_opt)
    return record


def plot(records: Sequence[Record], out_dir: Path) -> list[Path]:
    """Distance of the end point to the bilevel optimum, and the final losses, vs lam."""
    keys = [
        ("dist_to_bilevel_opt", "||theta_end - theta_opt||", "log"),
        ("train_main", "train main loss", "log"),
        ("train_aux", "train aux loss", "log"),
    ]
    path = out_dir / "vs_lam.png"
    return [metric_vs_lam_plot(records, keys, path, "Quadratic: end points vs lam")]


def run(spec: RunSpec, steps: int | None = None) -> Record:
    """One run of this experiment (single torch thread: the problem is tiny)."""
    with torch_threads(1):
        return _run(spec, steps)


register(
    Experiment(
        name="quadratic",
        title="Over-parameterised least squares vs distance to a point (authors' notebook)",
        paper_ref="authors' notebook; Sec. 3",
        kind="sweep",
        run=run,
        plot=plot,
        lams={"smoke": (0.0, 0.01, 1.0, 100.0), "default": LAMS_PAPER, "paper": LAMS_PAPER},
        description=(
            "Least squares with n = 256 samples and p = 300 parameters (main, MSE/2) and "
            "`||theta - theta*||^2/2` to a random theta* (aux); SGD lr 1e-3, batch 64, from 0, "
            "the same for every method and lam; lam in logspace(-3, 3, 10) plus 0. The bilevel "
            "optimum (gold star) is the projection of theta* onto {X theta = y}; "
            "`dist_to_bilevel_opt` is the distance to it. Paper's claim: Bloop reaches points "
            "with lower main AND aux loss than the baselines."
        ),
    )
)
