"""A hierarchy of three losses (method.md section 7, paper Sec. 2.3), Fashion-MNIST MLP.

Priority order: ``L_0`` cross-entropy (main), then ``L_1 = sum_l log ||W_l||_2`` (the smoothness
bound of ``smooth_mlp``: power iteration while training, exact at evaluation), then
``L_2 = ||theta||^2 / 2`` over all parameters. A run's ``lam`` holds one weight per aux loss,
``(lam_1, lam_2)``. Compared, on the same batches and initialisation per seed:

* ``bloop``: K-level Bloop, ``aux=[L_1, L_2]``:
  ``d = g_0 + lam_1 P_1 g_1 + lam_2 P_2 g_2``, ``P_k`` the projection off ``span(e_0..e_{k-1})``;
* ``mixed``: ``aux=[L_1, L_2]``, ``d = g_0 + lam_1 g_1 + lam_2 g_2``;
* ``bloop`` variant ``summed``: Bloop with one aux loss ``lam_1 L_1 + lam_2 L_2`` at ``lam = 1``:
  ``d = g_0 + P_1 (lam_1 g_1 + lam_2 g_2)``, so ``L_2`` is kept off ``L_0`` but not off ``L_1``.

The question, per level: does adding the lower-priority loss leave the higher-priority ones
where they were? :func:`protection_rows` compares each run with the run that has the same
higher-priority weights and a zero weight at the level in question.

Adam lr 3e-4, batch 256, 5% warm-up then cosine decay to 0; the same for every method and lam.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..analysis.groups import group_records
from ..analysis.plots import curve_plot, group_colour
from ..data.vision_batches import Batches, fashion_split, fixed_rows, normalize
from ..models.vision import MLP, classifier_metrics
from ..sweep.registry import Experiment, Record, RunSpec, format_float, register
from ..sweep.training import cosine_with_warmup, set_seed, train
from .smooth_mlp import SpectralNormEstimator, exact_log_norm_product

__all__ = ["half_squared_norm", "protection_rows", "run"]

OBJECTIVES = ("main", "smooth", "l2")
SUMMED = "summed"
LR, BATCH, WARMUP_FRACTION = 3e-4, 256, 0.05
STEPS = {"smoke": 30, "default": 500, "paper": 2350}
"""Optimizer steps per budget (235 steps = one epoch of the 60k training images)."""
EVAL_POINTS = {"smoke": 2, "default": 10, "paper": 20}
EVAL_SIZE = {"smoke": 500, "default": 5000, "paper": 10_000}
LAM1 = {"smoke": (0.3,), "default": (0.03, 0.3), "paper": (0.01, 0.03, 0.1, 0.3)}
LAM2 = {
    "smoke": (0.0, 0.03),
    "default": (0.0, 0.003, 0.03),
    "paper": (0.0, 0.001, 0.003, 0.01, 0.03),
}


def _grid(lam1s: Sequence[float], lam2s: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """``(0, 0)`` (plain training) and every ``(lam_1, lam_2)`` pair of the two grids."""
    return ((0.0, 0.0), *itertools.product(lam1s, lam2s))


LAMS = {budget: _grid(LAM1[budget], LAM2[budget]) for budget in LAM1}


def half_squared_norm(params: Sequence[Tensor]) -> Tensor:
    """``sum_p ||p||^2 / 2`` over the tensors.

    Example:
        >>> half_squared_norm([torch.ones(2), torch.full((1,), 2.0)]).item()
        3.0
    """
    return torch.stack([p.pow(2).sum() for p in params]).sum() / 2


def run(spec: RunSpec, steps: int | None = None) -> Record:
    """One Adam run: K-level surgery on ``[L_1, L_2]``, or the two summed (variant ``summed``)."""
    lam1, lam2 = (*spec.levels, 0.0)[:2]
    gen = set_seed(spec.seed)
    train_set, test_set = fashion_split("train"), fashion_split("test")
    train_eval = fixed_rows(train_set, EVAL_SIZE[spec.budget], spec.seed)
    test_eval = fixed_rows(test_set, EVAL_SIZE[spec.budget], spec.seed)
    model = MLP()
    params = list(model.parameters())
    estimator = SpectralNormEstimator(model.weight_matrices(), gen, warm_start=20)
    steps = steps if steps is not None else STEPS[spec.budget]
    optimizer = torch.optim.Adam(params, lr=LR)
    scheduler = cosine_with_warmup(
        optimizer, total_steps=steps, warmup_steps=round(WARMUP_FRACTION * steps)
    )

    def evaluate() -> dict[str, Any]:
        smooth = float(exact_log_norm_product(model.weight_matrices()))
        l2 = float(half_squared_norm(params))
        train_main, train_acc = classifier_metrics(model, train_eval)
        eval_main, eval_acc = classifier_metrics(model, test_eval)
        return {
            "train_main": train_main,
            "train_smooth": smooth,
            "train_l2": l2,
            "eval_main": eval_main,
            "eval_smooth": smooth,
            "eval_l2": l2,
            "train_acc": train_acc,
            "eval_acc": eval_acc,
        }

    def aux_losses(m: torch.nn.Module, batch: Any) -> Tensor | list[Tensor]:
        levels = [estimator.log_norm_product(), half_squared_norm(params)]
        if spec.variant == SUMMED:
            return lam1 * levels[0] + lam2 * levels[1]
        return levels

    return train(
        spec,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=Batches(train_set, BATCH, gen),
        main_loss=lambda m, b: F.cross_entropy(m(normalize(b.images)), b.labels),
        aux_loss=aux_losses,
        steps=steps,
        evaluate=evaluate,
        eval_every=max(1, steps // EVAL_POINTS[spec.budget]),
        final_keys=tuple(f"{s}_{o}" for s in ("train", "eval") for o in OBJECTIVES),
        lam=1.0 if spec.variant == SUMMED else (lam1, lam2),
        config={
            "dataset": "fashion_mnist",
            "model": "MLP 784-256-128-10 ReLU",
            "losses": "L0 cross-entropy; L1 sum_l log ||W_l||_2; L2 ||theta||^2/2",
            "surgery": "aux=lam1 L1 + lam2 L2 at lam=1"
            if spec.variant == SUMMED
            else "aux=[L1, L2]",
            "optimizer": "Adam",
            "lr": LR,
            "batch": BATCH,
            "steps": steps,
            "schedule": f"linear warm-up {WARMUP_FRACTION:.0%} + cosine to 0",
            "eval_size": len(test_eval),
        },
    )


def _mean(records: Sequence[Record], key: str) -> float:
    values = [r["final"].get(key, math.nan) for r in records]
    return sum(values) / len(values) if values else math.nan


def protection_rows(records: Sequence[Record], split: str = "train") -> list[list[Any]]:
    """Per method group and level: how much each higher-priority loss moved when that level
    was switched on (its weight from 0 to each value on the grid), seeds averaged.

    Level 1 compares ``(lam_1, 0)`` with ``(0, 0)``; level 2 compares ``(lam_1, lam_2)`` with
    ``(lam_1, 0)``. Each row: ``[group, level, lam_1, lam_2, change of L_0, change of L_1
    (level 2 only, else nan), change of the level's own loss]``; a positive change of a
    higher-priority loss means the lower-priority one made it worse.
    """
    rows: list[list[Any]] = []
    keys = [f"{split}_{o}" for o in OBJECTIVES]
    for label, recs in group_records(records).items():
        by_lam: dict[tuple[float, ...], list[Record]] = defaultdict(list)
        for r in recs:
            levels = (
                tuple(r["spec"]["lam"])
                if isinstance(r["spec"]["lam"], tuple)
                else (r["spec"]["lam"], 0.0)
            )
            by_lam[levels].append(r)
        mean = {lam: [_mean(rs, k) for k in keys] for lam, rs in by_lam.items()}
        for (lam1, lam2), values in sorted(mean.items()):
            base = (0.0, 0.0) if lam2 == 0 else (lam1, 0.0)
            if (lam1, lam2) == (0.0, 0.0) or base not in mean:
                continue
            level = 1 if lam2 == 0 else 2
            ref = mean[base]
            delta = [v - b for v, b in zip(values, ref)]
            rows.append(
                [
                    label,
                    level,
                    lam1,
                    lam2,
                    delta[0],
                    delta[1] if level == 2 else math.nan,
                    delta[level],
                ]
            )
    return rows


def summary(records: Sequence[Record]) -> list[str]:
    """The report's per-level protection table (train split)."""
    from ..analysis.report import md_table

    rows = protection_rows(records)
    if not rows:
        return []
    header = [
        "method",
        "level",
        "lam_1",
        "lam_2",
        "change of L_0 (CE)",
        "change of L_1",
        "change of own loss",
    ]
    lines = [
        "## Protection per level",
        "",
        "Level 1 (L_1 switched on): the run at (lam_1, 0) minus the run at (0, 0). Level 2 "
        "(L_2 switched on): the run at (lam_1, lam_2) minus the run at (lam_1, 0). Train split, "
        "final values, seeds averaged. A positive change of L_0 or L_1 means the lower-priority "
        "loss made a higher-priority one worse (it was not protected); the last column is what "
        "the level bought on its own loss (negative: lower).",
        "",
    ]
    return lines + md_table(header, rows)


def plot(records: Sequence[Record], out_dir: Path) -> list[Path]:
    """Final L_0, L_1, L_2 against lam_2 (index on the grid), one line per method and lam_1."""
    groups = group_records(records)
    lam2s = sorted(
        {
            (r["spec"]["lam"] if isinstance(r["spec"]["lam"], tuple) else (0.0, 0.0))[1]
            for r in records
        }
    )
    curves = []
    for label, recs in groups.items():
        lam1s = sorted(
            {r["spec"]["lam"][0] for r in recs if isinstance(r["spec"]["lam"], tuple)} - {0.0}
        )
        for li, lam1 in enumerate(lam1s):
            line = sorted(
                (
                    r
                    for r in recs
                    if isinstance(r["spec"]["lam"], tuple) and r["spec"]["lam"][0] == lam1
                ),
                key=lambda r: r["spec"]["lam"][1],
            )
            for key, name in zip(
                ("train_main", "train_smooth", "train_l2"),
                ("L_0 cross-entropy", "L_1 smoothness", "L_2 ||theta||^2/2"),
            ):
                curves.append(
                    {
                        "x": [lam2s.index(r["spec"]["lam"][1]) for r in line],
                        "y": [r["final"][key] for r in line],
                        "label": f"{label}, lam_1={format_float(lam1)}",
                        "color": group_colour(groups, label),
                        "linestyle": ("-", "--", ":", "-.")[li % 4],
                        "panel": f"train {name}",
                        "xlabel": "lam_2: " + ", ".join(format_float(x) for x in lam2s),
                        "ylabel": f"final train {name}",
                    }
                )
    return [curve_plot(curves, out_dir / "levels.png", "Hierarchy: each loss against lam_2")]


register(
    Experiment(
        name="hierarchy",
        title="Three losses in priority order: cross-entropy, smoothness bound, ||theta||^2/2 (Fashion-MNIST)",
        paper_ref="Sec. 2.3; method.md sec. 7",
        kind="sweep",
        run=run,
        methods=("bloop", "mixed"),
        variants={"bloop": (SUMMED,)},
        lams=LAMS,
        objectives=OBJECTIVES,
        max_levels=2,
        datasets=("fashion_mnist",),
        plot=plot,
        summary=summary,
        description=(
            "MLP 784-256-128-10 (ReLU) on Fashion-MNIST with three losses in priority order: "
            "L_0 cross-entropy (main), L_1 = sum_l log ||W_l||_2 (power iteration while training, "
            "exact at evaluation), L_2 = ||theta||^2/2. lam = (lam_1, lam_2), one weight per aux "
            "loss. Bloop: K-level Bloop, aux=[L_1, L_2], level k projected off the EMAs of the "
            "levels above (rho = 0.01). Mixed: g_0 + lam_1 g_1 + lam_2 g_2. Bloop (summed): one-"
            "level Bloop on lam_1 L_1 + lam_2 L_2, which keeps L_2 off L_0 but not off L_1. Adam "
            "3e-4, batch 256, 5% warm-up then cosine decay, the same for every method and lam; "
            "train metrics on a fixed subset of the training set, eval on the test set (L_1 and "
            "L_2 depend on the weights only: train = eval). Question: per level, is the "
            "higher-priority loss protected from the lower one?"
        ),
    )
)
