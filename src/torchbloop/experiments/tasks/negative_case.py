"""Negative case (paper App. C): two tasks that do not conflict, so every method should do alike.

Plain Fashion-MNIST images; main: cross-entropy of the 10-way garment label (head 0); aux:
cross-entropy of a coarse 3-way grouping of the same label (head 1; upper-body garments /
trousers and bags / footwear, :data:`~torchbloop.experiments.vision_data.FASHION_COARSE`).
The coarse label is a function of the fine one, so any minimiser of the main loss's trunk
features also serves the aux head: the tasks share their optimum up to the aux head.
Same network and optimizer as :mod:`.multitask` (two-head ConvNet, SGD lr 0.1 / (1 + lam),
cosine decay), Bloop rho = 0.01, lam from 1e-3 to 1e3 (default: every second decade). Train
metrics on a fixed subset of the training set, eval metrics on a fixed subset of the test
images (sizes per budget below).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..data.vision_batches import FASHION_COARSE, MultiTaskSet, fashion_split, fixed_rows
from ..sweep.registry import Experiment, Record, RunSpec, register
from .multitask import run_two_heads

__all__ = ["coarse_set", "run"]

STEPS = {"smoke": 60, "default": 300, "paper": 4_700}
"""Optimizer steps per budget (469 steps = one epoch of 60k at batch 128)."""
EVAL_POINTS = {"smoke": 3, "default": 8, "paper": 40}
TRAIN_EVAL_SIZE = {"smoke": 1000, "default": 2000, "paper": 10_000}
TEST_EVAL_SIZE = {"smoke": 1000, "default": 5000, "paper": 10_000}
LAMS_DEFAULT = (0.0, *np.logspace(-3, 3, 4).tolist())
LAMS_PAPER = (0.0, *np.logspace(-3, 3, 13).tolist())


def coarse_set(split: str) -> MultiTaskSet:
    """Fashion-MNIST ``split`` with its coarse label in the ``digits`` slot of a :class:`MultiTaskSet`.

    Example:
        >>> torch.tensor(FASHION_COARSE)[torch.tensor([0, 5, 8])].tolist()
        [0, 2, 1]
    """
    data = fashion_split(split)  # type: ignore[arg-type]
    coarse: Tensor = torch.tensor(FASHION_COARSE)[data.labels]
    return MultiTaskSet(data.images, data.labels, coarse)


def run(spec: RunSpec, steps: int | None = None) -> Record:
    """One run: main = 10-way label, aux = 3-way coarse label (``steps`` overrides the budget's)."""
    train_set, test_set = coarse_set("train"), coarse_set("test")
    return run_two_heads(
        spec,
        train_set=train_set,
        train_eval=fixed_rows(train_set, TRAIN_EVAL_SIZE[spec.budget], spec.seed),
        test_eval=fixed_rows(test_set, TEST_EVAL_SIZE[spec.budget], spec.seed),
        heads=(10, 3),
        main_labels=lambda d: d.labels,
        aux_labels=lambda d: d.digits,
        steps=steps if steps is not None else STEPS[spec.budget],
        eval_points=EVAL_POINTS[spec.budget],
        config={
            "dataset": "fashion_mnist",
            "main": "10-way garment cross-entropy (head 0)",
            "aux": "3-way coarse group cross-entropy (head 1): tops / trousers+bags / footwear",
        },
    )


register(
    Experiment(
        name="negative_case",
        title="Negative case: garment label (main) vs its coarse group (aux), tasks that agree",
        paper_ref="App. C",
        kind="sweep",
        run=run,
        lams={"smoke": (0.0, 0.1, 10.0), "default": LAMS_DEFAULT, "paper": LAMS_PAPER},
        datasets=("fashion_mnist",),
        description=(
            "Fashion-MNIST, one small CNN trunk with a 10-way head (main: garment cross-entropy) and "
            "a 3-way head (aux: cross-entropy of a coarse grouping of the same label: upper-body "
            "garments / trousers and bags / footwear). The coarse label is a function of the fine "
            "one, so the tasks do not conflict. Same optimizer as `multitask` (SGD lr 0.1/(1+lam), "
            "cosine decay, batch 128) for every method; Bloop rho = 0.01. Train metrics on a fixed 2k "
            "subset of the training set, eval on a fixed 5k subset of the test set. Paper: all methods alike."
        ),
    )
)
