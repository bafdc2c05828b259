"""Small weights (paper Sec. 5.2): cross-entropy vs ``||theta||^2 / 2`` for a small CNN, Fashion-MNIST.

main: cross-entropy of :class:`~torchbloop.experiments.models.vision.ConvNet` (two stride-2
convolutions 16 and 32 channels, hidden layer 64, 0.1 M parameters); aux: half the squared norm
of all its parameters (what weight decay penalises). SGD with Nesterov momentum 0.9, lr 0.05,
batch 128, cosine decay to 0 without warm-up, the same for every method and lam. The paper ran
a ResNet50 on ImageNet; this is the CPU-scale stand-in. Train metrics on a fixed subset of the
training set, eval metrics on a fixed subset of the test images (sizes per budget below).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.vision_batches import Batches, fashion_split, fixed_rows, normalize
from ..models.vision import ConvNet, classifier_metrics
from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import cosine_with_warmup, set_seed, train

__all__ = ["half_squared_norm", "run"]

LR, MOMENTUM, BATCH = 0.05, 0.9, 128
STEPS = {"smoke": 60, "default": 500, "paper": 9_400}
"""Optimizer steps per budget (469 steps = one epoch of 60k at batch 128)."""
EVAL_POINTS = {"smoke": 3, "default": 8, "paper": 40}
TRAIN_EVAL_SIZE = {"smoke": 1000, "default": 2000, "paper": 10_000}
TEST_EVAL_SIZE = {"smoke": 1000, "default": 5000, "paper": 10_000}
LAMS_DEFAULT = (0.0, *np.logspace(-4, 0, 5).tolist())
LAMS_PAPER = (0.0, *np.logspace(-5, 0, 11).tolist())


def half_squared_norm(params: list[nn.Parameter] | list[Tensor]) -> Tensor:
    """``||theta||^2 / 2`` over all tensors of ``params``.

    Example:
        >>> half_squared_norm([torch.ones(2), torch.full((1,), 2.0)]).item()
        3.0
    """
    return 0.5 * torch.stack([p.pow(2).sum() for p in params]).sum()


def run(spec: RunSpec, steps: int | None = None) -> Record:
    """One SGD-Nesterov run of ``spec.method`` at ``spec.lam`` (``steps`` overrides the budget's)."""
    gen = set_seed(spec.seed)
    train_set, test_set = fashion_split("train"), fashion_split("test")
    train_eval = fixed_rows(train_set, TRAIN_EVAL_SIZE[spec.budget], spec.seed)
    test_eval = fixed_rows(test_set, TEST_EVAL_SIZE[spec.budget], spec.seed)
    model = ConvNet(heads=(10,))
    params = list(model.parameters())
    steps = steps if steps is not None else STEPS[spec.budget]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, nesterov=True)
    scheduler = cosine_with_warmup(optimizer, total_steps=steps)

    def evaluate() -> dict[str, Any]:
        aux = float(half_squared_norm(params))
        train_main, train_acc = classifier_metrics(model, train_eval)
        eval_main, eval_acc = classifier_metrics(model, test_eval)
        return {
            "train_main": train_main,
            "train_aux": aux,
            "eval_main": eval_main,
            "eval_aux": aux,
            "train_acc": train_acc,
            "eval_acc": eval_acc,
        }

    return train(
        spec,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=Batches(train_set, BATCH, gen),
        main_loss=lambda m, b: F.cross_entropy(m(normalize(b.images))[0], b.labels),
        aux_loss=lambda m, b: half_squared_norm(params),
        steps=steps,
        evaluate=evaluate,
        eval_every=max(1, steps // EVAL_POINTS[spec.budget]),
        config={
            "dataset": "fashion_mnist",
            "model": "ConvNet conv16/s2-conv32/s2-fc64-fc10",
            "n_params": sum(p.numel() for p in params),
            "optimizer": "SGD Nesterov",
            "lr": LR,
            "momentum": MOMENTUM,
            "batch": BATCH,
            "steps": steps,
            "epochs": round(steps * BATCH / len(train_set), 2),
            "schedule": "cosine to 0, no warm-up",
            "aux": "||theta||^2/2 (all parameters)",
            "train_eval_size": len(train_eval),
            "eval_size": len(test_eval),
        },
    )


register(
    Experiment(
        name="small_weights",
        title="Small weights: cross-entropy vs ||theta||^2/2 for a small CNN (Fashion-MNIST)",
        paper_ref="Sec. 5.2",
        kind="sweep",
        run=run,
        lams={"smoke": (0.0, 0.01, 1.0), "default": LAMS_DEFAULT, "paper": LAMS_PAPER},
        datasets=("fashion_mnist",),
        description=(
            "A small CNN (two stride-2 3x3 convolutions with 16 and 32 channels, a 64-unit hidden "
            "layer; 0.1 M parameters) on Fashion-MNIST. main: cross-entropy; aux: `||theta||^2/2` "
            "over all parameters. SGD with Nesterov momentum 0.9, lr 0.05, batch 128, cosine decay "
            "to 0, the same for every method and lam; Bloop rho = 0.01. Train metrics on a fixed 2k "
            "subset of the training set, eval metrics on a fixed 5k subset of the test set. Paper (ResNet50 on "
            "ImageNet): Bloop's front is clearly better, on train and test."
        ),
    )
)
