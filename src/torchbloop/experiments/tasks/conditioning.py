"""The 2-D conditioning example (Sec. 3.3): ``a^2/2`` (main) vs ``((a-1)^2 + b^2)/2`` (aux).

Analytic facts (full-batch gradients ``g_main = (a, 0)``, ``g_aux = (a - 1, b)``):

* bilevel solution: ``argmin L_main = {a = 0}``, on which ``L_aux = (1 + b^2)/2`` is minimal at
  ``b = 0``: ``(0, 0)``.
* Mixed minimises ``a^2/2 + lam ((a-1)^2 + b^2)/2``: solution ``(lam / (1 + lam), 0)`` (biased
  for every lam > 0), Hessian ``diag(1 + lam, lam)``, condition number ``(1 + lam) / lam``
  (ill-conditioned as lam -> 0).
* Bloop: ``pi(g_aux; g_main) = (0, b)`` so ``d = (a, lam b)``; its only fixed point is the
  bilevel solution ``(0, 0)`` for every lam > 0; the Jacobian ``diag(1, lam)`` also has
  condition ``1 / lam`` for lam < 1 (the b direction is as slow as Mixed's).
* Dynamic Barrier gives the same ``d = (a, lam b)`` while ``<g_main, g_aux> < 0``.

Each run drives one surgeon with SGD (lr 0.5, which suits ``L_main`` alone and is stable for
every method at lam <= 1) from ``(a, b) = (1.5, 1.5)`` until the step is below ``1e-10`` or the
budget's step limit, and records the end point, its distance to ``(0, 0)``, and the steps
needed to get within ``TOL`` of ``(0, 0)`` and of the method's own fixed point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.plots import METHOD_COLORS, curve_plot, group_records
from ..sweep.methods import make_surgeon
from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import torch_threads

LR = 0.5
START = (1.5, 1.5)
TOL = 1e-3
STOP = 1e-10
MAX_STEPS = {"smoke": 1_000, "default": 20_000, "paper": 200_000}
LAMS = {
    "smoke": (0.1, 1.0),
    "default": tuple(np.logspace(-3, 0, 7).tolist()),
    "paper": tuple(np.logspace(-4, 0, 9).tolist()),
}


def fixed_point(method: str, lam: float) -> tuple[float, float]:
    """The analytic fixed point of ``method`` (Mixed: its biased solution; others: (0, 0))."""
    return (lam / (1 + lam), 0.0) if method == "mixed" else (0.0, 0.0)


def _run(spec: RunSpec) -> Record:
    """Run the surgeon of ``spec.method`` with SGD from ``START`` (float64)."""
    theta = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    opt = torch.optim.SGD([theta], lr=LR)
    surgeon = make_surgeon(spec.method, [theta], spec.lam, spec.rho)
    target = torch.tensor(fixed_point(spec.method, spec.lam), dtype=torch.float64)
    steps_bilevel = steps_fixed = math.nan
    xs, ys, steps_rec = [START[0]], [START[1]], [0]
    step = 0
    for step in range(1, MAX_STEPS[spec.budget] + 1):
        a, b = theta[0], theta[1]
        opt.zero_grad()
        surgeon.backward(main=0.5 * a**2, aux=0.5 * ((a - 1) ** 2 + b**2))
        opt.step()
        with torch.no_grad():
            if math.isnan(steps_bilevel) and float(theta.norm()) < TOL:
                steps_bilevel = step
            if math.isnan(steps_fixed) and float((theta - target).norm()) < TOL:
                steps_fixed = step
            if step % max(1, MAX_STEPS[spec.budget] // 200) == 0:
                xs.append(float(theta[0]))
                ys.append(float(theta[1]))
                steps_rec.append(step)
            if theta.grad is None or float(theta.grad.norm()) * LR < STOP:
                break
    a_end, b_end = (float(v) for v in theta.detach())
    main, aux = 0.5 * a_end**2, 0.5 * ((a_end - 1) ** 2 + b_end**2)
    final = {
        "train_main": main,
        "train_aux": aux,
        "eval_main": main,
        "eval_aux": aux,
        "a": a_end,
        "b": b_end,
        "dist_to_bilevel_opt": math.hypot(a_end, b_end),
        "steps_to_bilevel_tol": steps_bilevel,
        "steps_to_own_fixed_point_tol": steps_fixed,
        "steps_run": step,
    }
    lam = spec.lam
    return {
        "config": {"lr": LR, "start": list(START), "tol": TOL, "max_steps": MAX_STEPS[spec.budget]},
        "final": final,
        "curves": {
            "path": {
                "x": xs,
                "y": ys,
                "label": spec.method,
                "xlabel": "a",
                "ylabel": "b",
                "panel": "iterates",
            }
        },
        "extra": {
            "mixed_solution_a": lam / (1 + lam),
            "mixed_hessian_condition": (1 + lam) / lam if lam > 0 else math.inf,
            "path_steps": steps_rec,
        },
    }


def plot(records: Sequence[Record], out_dir: Path) -> list[Path]:
    """Distance to (0, 0), steps to tolerance, and condition numbers vs lam."""
    curves = []
    lams_all = sorted({r["spec"]["lam"] for r in records if r["spec"]["lam"] > 0})
    for label, recs in group_records(records).items():
        recs = sorted((r for r in recs if r["spec"]["lam"] > 0), key=lambda r: r["spec"]["lam"])
        color = METHOD_COLORS.get(recs[0]["spec"]["method"]) if recs else None
        x = [r["spec"]["lam"] for r in recs]
        common = {
            "x": x,
            "label": label,
            "color": color,
            "xlabel": "lam",
            "xscale": "log",
            "yscale": "log",
        }
        curves.append(
            {
                **common,
                "y": [max(r["final"]["dist_to_bilevel_opt"], 1e-16) for r in recs],
                "panel": "end point: distance to (0, 0)",
                "ylabel": "||theta_end|| (floored at 1e-16)",
            }
        )
        curves.append(
            {
                **common,
                "y": [r["final"]["steps_to_bilevel_tol"] for r in recs],
                "panel": f"SGD steps until ||theta|| < {TOL:g} (missing = never)",
                "ylabel": "steps",
            }
        )
    analytic: dict[str, Any] = {
        "x": lams_all,
        "xlabel": "lam",
        "xscale": "log",
        "yscale": "log",
        "color": "k",
        "linestyle": "--",
    }
    curves.append(
        {
            **analytic,
            "y": [lam / (1 + lam) for lam in lams_all],
            "label": "Mixed, analytic lam/(1+lam)",
            "panel": "end point: distance to (0, 0)",
            "ylabel": "||theta_end||",
        }
    )
    curves.append(
        {
            **analytic,
            "y": [(1 + lam) / lam for lam in lams_all],
            "label": "Mixed Hessian (1+lam)/lam",
            "panel": "condition numbers (analytic)",
            "ylabel": "condition number",
        }
    )
    curves.append(
        {
            **analytic,
            "y": [max(1, lam) / min(1, lam) for lam in lams_all],
            "linestyle": ":",
            "label": "Bloop fixed-point Jacobian diag(1, lam)",
            "panel": "condition numbers (analytic)",
            "ylabel": "condition number",
        }
    )
    return [curve_plot(curves, out_dir / "conditioning.png", "2-D conditioning example (Sec. 3.3)")]


def run(spec: RunSpec) -> Record:
    """One run of this experiment (single torch thread: the problem is tiny)."""
    with torch_threads(1):
        return _run(spec)


register(
    Experiment(
        name="conditioning",
        title="2-D conditioning example: a^2/2 vs ((a-1)^2 + b^2)/2",
        paper_ref="Sec. 3.3",
        kind="analysis",
        run=run,
        lams=LAMS,
        plot=plot,
        description=(
            "Main `a^2/2`, aux `((a-1)^2 + b^2)/2`; the bilevel solution is (0, 0). Mixed's "
            "solution is (lam/(1+lam), 0) with Hessian condition number (1+lam)/lam; Bloop's "
            "fixed point is (0, 0) for every lam. Each run: SGD lr 0.5 from (1.5, 1.5), full-batch "
            "gradients. Paper's claim: Mixed is ill-conditioned as lam -> 0 while Bloop solves "
            "the bilevel problem for every lam. Note: Bloop's b-direction contracts at rate "
            "1 - lr*lam, as Mixed's does, so both need about 1/(lr*lam) steps."
        ),
    )
)
