"""A generic training loop for sweep experiments, plus seeding and a learning-rate schedule.

Every method is driven the same way through the public API::

    optimizer.zero_grad()
    surgeon.backward(main=main_loss(model, batch), aux=aux_loss(model, batch))
    optimizer.step()

so optimizer settings never depend on the method or on lam (as in the paper).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from torchbloop import NonFiniteGradientError

from .methods import make_surgeon
from .registry import Record, RunSpec
from .results import LOSS_KEYS, SCHEMA_VERSION


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a fresh ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (restored afterwards).

    Small problems (vectors of a few hundred entries) run several times faster with one
    thread, and far faster when other processes compete for the cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    final_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``final_factor`` x lr.

    Step it once per optimizer step.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([p], lr=1.0)
        >>> sched = cosine_with_warmup(opt, total_steps=10, warmup_steps=2)
        >>> [round(f(s), 3) for f in sched.lr_lambdas for s in (0, 1, 2, 6, 10)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"Invalid total_steps={total_steps}, warmup_steps={warmup_steps}: need 0 <= warmup <= total, total >= 1"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The steps at which :func:`train` evaluates: 0, every ``eval_every``, and ``steps``.

    Example:
        >>> eval_steps(10, 4)
        [0, 4, 8, 10]
    """
    points = list(range(0, steps + 1, max(1, eval_every)))
    if points[-1] != steps:
        points.append(steps)
    return points


def train(
    spec: RunSpec,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Any],
    main_loss: Callable[[torch.nn.Module, Any], torch.Tensor],
    aux_loss: Callable[[torch.nn.Module, Any], torch.Tensor],
    steps: int,
    evaluate: Callable[[], dict[str, float]],
    eval_every: int,
    scheduler: Any = None,
    params: Any = None,
    config: dict[str, Any] | None = None,
) -> Record:
    """Train ``model`` with the surgeon of ``spec.method`` and return a schema-1 record.

    Args:
        spec: the run (method, lam, rho are read from it).
        model: the model; the surgeon acts on ``params`` (default: ``model.parameters()``).
        optimizer: an optimizer over the same parameters.
        batches: an iterator of batches; one batch per step (main and aux see the same one).
        main_loss: ``(model, batch) -> scalar`` main loss.
        aux_loss: ``(model, batch) -> scalar`` aux loss.
        steps: number of optimizer steps.
        evaluate: called at each eval point (under ``torch.no_grad()``, model in eval mode);
            returns at least ``train_main``, ``train_aux``, ``eval_main``, ``eval_aux`` and
            any extra metrics (recorded in the trajectory and the final point too).
        eval_every: steps between eval points (step 0 and the last step are always evaluated).
        scheduler: optional LR scheduler, stepped after every optimizer step.
        params: the parameters handed to the surgeon (default: all of the model's).
        config: experiment settings stored in ``record["config"]``.

    Returns:
        The record (see :mod:`torchbloop.experiments.results`); a non-finite loss stops the
        run early and is recorded in ``extra["diverged_at_step"]``.

    Raises:
        ValueError: ``evaluate`` misses one of the four loss keys.
    """
    surgeon = make_surgeon(
        spec.method, params if params is not None else model.parameters(), spec.lam, spec.rho
    )
    trajectory: dict[str, list[float]] = {"step": []}
    extra: dict[str, Any] = {}
    checkpoints = set(eval_steps(steps, eval_every))
    start = time.perf_counter()
    train_time = 0.0

    def record_point(step: int) -> dict[str, float]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in evaluate().items()}
        model.train(was_training)
        missing = [k for k in LOSS_KEYS if k not in metrics]
        if missing:
            raise ValueError(f"Invalid evaluate() result: missing {missing}")
        trajectory["step"].append(step)
        n = len(trajectory["step"])
        for k, v in metrics.items():
            trajectory.setdefault(k, [math.nan] * (n - 1)).append(v)
        for values in trajectory.values():  # a metric evaluate() stopped returning: NaN
            values.extend([math.nan] * (n - len(values)))
        return metrics

    final = record_point(0)
    model.train()
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss_main = main_loss(model, batch)
        loss_aux = aux_loss(model, batch)
        if not (torch.isfinite(loss_main) and torch.isfinite(loss_aux)):
            extra["diverged_at_step"] = step
            break
        try:
            surgeon.backward(main=loss_main, aux=loss_aux)
        except NonFiniteGradientError:
            extra["diverged_at_step"] = step
            break
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        train_time += time.perf_counter() - t0
        if step in checkpoints:
            final = record_point(step)
    if "diverged_at_step" in extra:
        final = {k: math.nan for k in final}
    extra["train_time_s"] = train_time
    return {
        "schema": SCHEMA_VERSION,
        "spec": dataclasses.asdict(spec),
        "config": dict(config or {}),
        "trajectory": trajectory,
        "final": final,
        "curves": {},
        "extra": extra,
        "wall_time_s": time.perf_counter() - start,
    }
