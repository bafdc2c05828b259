"""Regime study: when do Bloop's end points leave Mixed's front, and when do they reach the bilevel optimum?

Two over-parameterised least-squares problems with an L2-to-a-point aux loss, where the bilevel
optimum (minimise the aux loss over the minimisers of the main loss) has a closed form,
``theta_opt = theta* - X^+ (X theta* - y)``:

* ``quadratic``: the authors' problem (:class:`~torchbloop.experiments.tasks.quadratic.Problem`,
  Gaussian ``X``, n = 256, p = 300).
* ``digits``: real images: :data:`DIGITS_N` MNIST digits (pixels in [0, 1], p = 784), target
  +1 for digits 5-9 and -1 for 0-4; the point ``theta*`` of the aux loss is a prior learned on
  other data (the ridge solution on :data:`DIGITS_PRIOR_N` other training digits). Pixels make
  ``X`` ill-conditioned (the mean image dominates), which is the regime of the issue's
  "alignment limit".

For each problem and seed, SGD runs at every combination of batch size (the gradient noise),
learning rate (a fraction of ``1 / L``, ``L`` the largest eigenvalue of ``X^T X / n``), lam and
method variant: Mixed, Bloop with a constant rho, and Bloop with rho tied to the learning rate
(``rho_t = rho_0 (lr_t / lr_0)^(2/3)``, the theory's scaling, on the same cosine schedule).
All variants of one (problem, seed, batch) run as the rows of one batched float64 computation
(one row = one independent run, all rows seeing the same mini-batches), which is what makes
the study cheap; ``tests/experiments/test_fronts.py`` checks that a row reproduces
:class:`torchbloop.Bloop` / :class:`torchbloop.Mixed` driven through the quadratic task.

The step follows method.md: Bloop's direction ``g_main + lam * pi(g_aux; e)`` with the EMA of
previous steps (the paper's order), the EMA created from the first main gradient, then
``e <- (1 - rho) e + rho g_main``. The leak diagnostic ``lam <pi(g_aux; e), g_main> / ||g_main||^2``
(0: the main loss descends as without the aux loss; -1: the aux term cancels its descent) and
``cos(g_main, e)`` are computed at every eval point from the full-batch gradients with
:func:`torchbloop.functional.projection_coefficient` (for Mixed ``pi`` is the identity, so its
leak is ``lam <g_aux, g_main> / ||g_main||^2``).

The record of one run (one seed) holds a list of rows in ``extra["rows"]``: the settings, the
end point (main, aux, eval main, distance to the bilevel optimum) and the diagnostics; rows of
full-batch runs also keep their trajectories. It also holds the paper's quadratic setting
(SGD 1e-3, batch 64, lam in logspace(-3, 3, 10) plus 0) for Bloop and Mixed, as rows with
``cell == "paper"``: the quadratic claim with several seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torchbloop.functional import projection_coefficient

from ..data.vision_batches import mnist5k_split
from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import set_seed, torch_threads
from .quadratic import LAMS_PAPER as QUADRATIC_LAMS
from .quadratic import Problem as QuadraticProblem

__all__ = [
    "LeastSquares",
    "Row",
    "digits_problem",
    "leak_diagnostics",
    "quadratic_problem",
    "regime_figure",
    "run",
    "summary",
    "train_rows",
]

DIGITS_N, DIGITS_PRIOR_N, DIGITS_EVAL_N = 200, 1000, 1000
DIGITS_PRIOR_RIDGE = 1.0
"""Ridge weight of the prior ``theta*`` (on ``X^T X / n``, whose largest eigenvalue is ~100)."""

BATCHES: dict[str, tuple[int | None, ...]] = {
    "smoke": (8, None),
    "default": (8, 32, None),
    "paper": (8, 32, None),
}
"""Batch sizes per budget; ``None`` is the full batch (exact gradients)."""
LR_SCALES = {"smoke": (0.05,), "default": (0.05, 0.5), "paper": (0.005, 0.05, 0.5)}
"""Learning rates as fractions of ``1 / L``."""
LAMS = {"smoke": (0.1, 10.0), "default": (0.01, 0.1, 1.0, 10.0), "paper": (0.01, 0.1, 1.0, 10.0)}
RHOS = (0.001, 0.01, 0.1, 1.0)
TIED_RHOS = (0.01, 0.1)
STEPS = {"smoke": 300, "default": 5_000, "paper": 40_000}
PAPER_STEPS = {"smoke": 300, "default": 20_000, "paper": 100_000}
"""Steps of the paper's quadratic setting (the ``quadratic`` experiment's budgets)."""
PAPER_LR, PAPER_BATCH, PAPER_RHO = 1e-3, 64, 0.01
EVAL_POINTS = 20


@dataclass(frozen=True)
class LeastSquares:
    """``L_main = ||X theta - y||^2 / (2n)``, ``L_aux = ||theta - theta*||^2 / 2`` (float64)."""

    name: str
    X: Tensor
    y: Tensor
    X_eval: Tensor
    y_eval: Tensor
    theta_star: Tensor
    theta_opt: Tensor
    L: float
    """Largest eigenvalue of ``X^T X / n`` (the main loss's curvature)."""

    def main(self, theta: Tensor, X: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """Main loss of each row of ``theta`` (``[V, p] -> [V]``)."""
        X = self.X if X is None else X
        y = self.y if y is None else y
        return 0.5 * ((theta @ X.T - y) ** 2).mean(dim=1)

    def aux(self, theta: Tensor) -> Tensor:
        """Aux loss of each row of ``theta``."""
        return 0.5 * ((theta - self.theta_star) ** 2).sum(dim=1)


def _bilevel_optimum(X: Tensor, y: Tensor, theta_star: Tensor) -> Tensor:
    correction: Tensor = torch.linalg.pinv(X) @ (X @ theta_star - y)
    return theta_star - correction


def _curvature(X: Tensor) -> float:
    return float(torch.linalg.eigvalsh(X @ X.T / X.shape[0]).max())


def quadratic_problem(seed: int) -> LeastSquares:
    """The authors' quadratic of ``seed`` (the same data as the ``quadratic`` experiment)."""
    p = QuadraticProblem(seed)
    return LeastSquares(
        "quadratic", p.X, p.y, p.X_eval, p.y_eval, p.theta_star, p.theta_opt, _curvature(p.X)
    )


def digits_problem(seed: int) -> LeastSquares:
    """Least squares on :data:`DIGITS_N` real MNIST digits (p = 784), aux: L2 to a ridge prior."""
    train, test = mnist5k_split("train"), mnist5k_split("test")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(50_000 + seed))

    def xy(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        X = images.reshape(len(images), -1).to(torch.float64)
        return X, torch.where(labels >= 5, 1.0, -1.0).to(torch.float64)

    X, y = xy(train.images[order[:DIGITS_N]], train.labels[order[:DIGITS_N]])
    prior_rows = order[DIGITS_N : DIGITS_N + DIGITS_PRIOR_N]
    A, b = xy(train.images[prior_rows], train.labels[prior_rows])
    gram = A.T @ A / len(b) + DIGITS_PRIOR_RIDGE * torch.eye(A.shape[1], dtype=torch.float64)
    theta_star = torch.linalg.solve(gram, A.T @ b / len(b))
    X_eval, y_eval = xy(test.images[:DIGITS_EVAL_N], test.labels[:DIGITS_EVAL_N])
    return LeastSquares(
        "digits",
        X,
        y,
        X_eval,
        y_eval,
        theta_star,
        _bilevel_optimum(X, y, theta_star),
        _curvature(X),
    )


@dataclass(frozen=True)
class Row:
    """One independent SGD run inside a batched computation.

    Args:
        method: ``"bloop"`` or ``"mixed"``.
        lam: aux weight.
        lr: initial learning rate (absolute).
        rho: Bloop's EMA weight (its initial value when ``tied``); ignored by Mixed.
        tied: Bloop's rho follows the learning rate: ``rho_t = rho (lr_t / lr)^(2/3)``.
    """

    method: str
    lam: float
    lr: float
    rho: float = 0.0
    tied: bool = False


def _batches(prob: LeastSquares, batch: int | None, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled epochs of mini-batches, in the same order as the ``quadratic`` experiment."""
    n = len(prob.y)
    if batch is None or batch >= n:
        while True:
            yield prob.X, prob.y
    g = torch.Generator().manual_seed(20_000 + seed)
    while True:
        perm = torch.randperm(n, generator=g)
        yield from zip(prob.X[perm].split(batch), prob.y[perm].split(batch))


def _cosine(step: int, steps: int) -> float:
    """The ``cosine_with_warmup`` factor (no warm-up, decay to 0) of optimizer step ``step``."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / steps)))


def leak_diagnostics(
    prob: LeastSquares, theta: Tensor, ema: Tensor, lam: Tensor, is_bloop: Tensor
) -> dict[str, Tensor]:
    """Leak ``lam <pi(g_aux; e), g_main> / ||g_main||^2`` and ``cos(g_main, e)`` per row (full batch)."""
    g_main = (theta @ prob.X.T - prob.y) @ prob.X / len(prob.y)
    g_aux = theta - prob.theta_star
    coef, _ = projection_coefficient((g_aux * ema).sum(1), (ema * ema).sum(1))
    projected = g_aux - torch.where(is_bloop, coef, torch.zeros_like(coef))[:, None] * ema
    main_sq = (g_main * g_main).sum(1)
    leak, _ = projection_coefficient(lam * (projected * g_main).sum(1), main_sq)
    cos, _ = projection_coefficient(
        (g_main * ema).sum(1), main_sq.sqrt() * (ema * ema).sum(1).sqrt()
    )
    return {"leak": leak, "cos_main_ema": cos}


def train_rows(
    prob: LeastSquares,
    rows: Sequence[Row],
    *,
    batch: int | None,
    steps: int,
    seed: int,
    schedule: str = "cosine",
    eval_points: int = EVAL_POINTS,
) -> list[dict[str, Any]]:
    """Run every row (SGD from 0) on the same batches; return one result dict per row.

    Args:
        prob: the problem.
        rows: the runs (one row of the batched parameter matrix each).
        batch: mini-batch size (``None``: full batch).
        steps: optimizer steps.
        seed: batch order (as in the ``quadratic`` experiment).
        schedule: ``"cosine"`` (decay to 0, no warm-up) or ``"constant"``.
        eval_points: evaluations along the way (plus step 0 and the last step).

    Returns:
        Per row: its settings, ``main``, ``aux``, ``eval_main``, ``dist_to_opt`` (all at the
        end; NaN when the run diverged), ``leak`` and ``cos_main_ema`` (full-batch, at the end;
        the mean of the leak over the second half of the run as ``leak_late``), ``main_min``
        (lowest main loss seen at an eval point) and ``trajectory`` (a dict of lists).
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"Invalid schedule={schedule!r}: must be 'cosine' or 'constant'")
    bad = [r.method for r in rows if r.method not in ("bloop", "mixed")]
    if bad:
        raise ValueError(f"Invalid methods {bad}: rows take 'bloop' or 'mixed'")
    f64 = torch.float64
    n_rows, p = len(rows), prob.X.shape[1]
    lam = torch.tensor([r.lam for r in rows], dtype=f64)
    lr0 = torch.tensor([r.lr for r in rows], dtype=f64)
    rho0 = torch.tensor([r.rho for r in rows], dtype=f64)
    tied = torch.tensor([r.tied for r in rows])
    is_bloop = torch.tensor([r.method == "bloop" for r in rows])
    theta = torch.zeros(n_rows, p, dtype=f64)
    ema: Tensor | None = None
    alive = torch.ones(n_rows, dtype=torch.bool)
    checkpoints = sorted({0, steps, *range(0, steps + 1, max(1, steps // eval_points))})
    traj: dict[str, list[list[float]]] = {
        k: [] for k in ("step", "main", "aux", "dist_to_opt", "leak", "cos_main_ema")
    }

    def record(step: int, e: Tensor) -> None:
        diag = leak_diagnostics(prob, theta, e, lam, is_bloop)
        values = {
            "main": prob.main(theta),
            "aux": prob.aux(theta),
            "dist_to_opt": torch.linalg.vector_norm(theta - prob.theta_opt, dim=1),
            **diag,
        }
        traj["step"].append([float(step)] * n_rows)
        for k, v in values.items():
            traj[k].append(torch.where(alive, v, torch.nan).tolist())

    batches = _batches(prob, batch, seed)
    for step in range(1, steps + 1):
        if step == 1:
            record(0, torch.zeros_like(theta))
        X, y = next(batches)
        g_main = (theta @ X.T - y) @ X / len(y)
        g_aux = theta - prob.theta_star
        if ema is None:
            ema = g_main.clone()
        coef, _ = projection_coefficient((g_aux * ema).sum(1), (ema * ema).sum(1))
        coef = torch.where(is_bloop, coef, torch.zeros_like(coef))
        direction = g_main + lam[:, None] * (g_aux - coef[:, None] * ema)
        factor = _cosine(step - 1, steps) if schedule == "cosine" else 1.0
        theta -= (lr0 * factor)[:, None] * direction
        rho = torch.where(tied, rho0 * factor ** (2.0 / 3.0), rho0)
        ema.lerp_(g_main, rho[:, None])
        finite = torch.isfinite(theta).all(dim=1)
        if not bool(finite.all()):  # a diverged row stops (kept at 0 so the others run on)
            alive &= finite
            theta[~finite] = 0.0
            ema[~finite] = 0.0
        if step in checkpoints:
            record(step, ema)
    eval_main = torch.where(alive, prob.main(theta, prob.X_eval, prob.y_eval), torch.nan)
    results: list[dict[str, Any]] = []
    half = len(traj["step"]) // 2
    for i, row in enumerate(rows):
        series = {k: [v[i] for v in vals] for k, vals in traj.items()}
        late = [x for x in series["leak"][half:] if math.isfinite(x)]
        mains = [x for x in series["main"] if math.isfinite(x)]
        results.append(
            {
                **asdict(row),
                "batch": batch if batch is not None else len(prob.y),
                "full_batch": batch is None or batch >= len(prob.y),
                "steps": steps,
                "schedule": schedule,
                "main": series["main"][-1],
                "aux": series["aux"][-1],
                "eval_main": float(eval_main[i]),
                "dist_to_opt": series["dist_to_opt"][-1],
                "leak": series["leak"][-1],
                "leak_late": float(np.mean(late)) if late else math.nan,
                "cos_main_ema": series["cos_main_ema"][-1],
                "main_min": min(mains) if mains else math.nan,
                "trajectory": series,
            }
        )
    return results


def _variants(lams: Sequence[float], lr: float) -> list[Row]:
    rows = [Row("mixed", lam, lr) for lam in lams]
    rows += [Row("bloop", lam, lr, rho) for rho in RHOS for lam in lams]
    rows += [Row("bloop", lam, lr, rho, tied=True) for rho in TIED_RHOS for lam in lams]
    return rows


def _problem_facts(prob: LeastSquares) -> dict[str, Any]:
    opt = prob.theta_opt[None]
    return {
        "n": len(prob.y),
        "p": prob.X.shape[1],
        "L": prob.L,
        "condition_XXt": float(torch.linalg.cond(prob.X @ prob.X.T)),
        "main_at_opt": float(prob.main(opt)[0]),
        "aux_at_opt": float(prob.aux(opt)[0]),
        "dist_origin_to_opt": float(torch.linalg.vector_norm(prob.theta_opt)),
    }


def _run(spec: RunSpec) -> Record:
    set_seed(spec.seed)
    budget = spec.budget
    problems = [quadratic_problem(spec.seed), digits_problem(spec.seed)]
    rows: list[dict[str, Any]] = []
    for prob in problems:
        for batch in BATCHES[budget]:
            variants = [r for s in LR_SCALES[budget] for r in _variants(LAMS[budget], s / prob.L)]
            for res in train_rows(prob, variants, batch=batch, steps=STEPS[budget], seed=spec.seed):
                res["lr_scale"] = res["lr"] * prob.L
                res.update(problem=prob.name, cell="regime")
                if not res["full_batch"]:
                    res.pop("trajectory")
                rows.append(res)
    quad = problems[0]
    paper_rows = [
        Row(m, lam, PAPER_LR, PAPER_RHO) for m in ("bloop", "mixed") for lam in QUADRATIC_LAMS
    ]
    for res in train_rows(
        quad,
        paper_rows,
        batch=PAPER_BATCH,
        steps=PAPER_STEPS[budget],
        seed=spec.seed,
        schedule="constant",
    ):
        res.pop("trajectory")
        res.update(problem=quad.name, cell="paper", lr_scale=res["lr"] * quad.L)
        rows.append(res)
    return {
        "config": {
            "problems": {p.name: _problem_facts(p) for p in problems},
            "batches": [b if b is not None else "full" for b in BATCHES[budget]],
            "lr_scales": list(LR_SCALES[budget]),
            "lams": list(LAMS[budget]),
            "rhos": list(RHOS),
            "tied_rhos": list(TIED_RHOS),
            "steps": STEPS[budget],
            "schedule": "cosine to 0, no warm-up; tied rho_t = rho_0 (lr_t / lr_0)^(2/3)",
            "paper_cell": {
                "lr": PAPER_LR,
                "batch": PAPER_BATCH,
                "rho": PAPER_RHO,
                "steps": PAPER_STEPS[budget],
                "schedule": "constant",
                "lams": list(QUADRATIC_LAMS),
            },
        },
        "extra": {"rows": rows},
    }


def run(spec: RunSpec) -> Record:
    """One seed of the whole study (single torch thread: the problems are small)."""
    with torch_threads(1):
        return _run(spec)


VARIANTS: tuple[tuple[str, float, bool], ...] = (
    *(("bloop", r, False) for r in RHOS),
    *(("bloop", r, True) for r in TIED_RHOS),
)


def _variant_name(rho: float, tied: bool) -> str:
    return f"rho {'~lr^2/3 from ' if tied else ''}{rho:g}"


def _cells(records: Sequence[Record]) -> dict[tuple[str, int, float], list[dict[str, Any]]]:
    """Regime rows grouped by (problem, batch, lr scale), each row tagged with its seed."""
    cells: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for rec in records:
        for row in rec["extra"]["rows"]:
            if row.get("cell") != "regime":
                continue
            key = (row["problem"], int(row["batch"]), round(float(row["lr_scale"]), 6))
            cells.setdefault(key, []).append({**row, "seed": int(rec["spec"]["seed"])})
    return cells


DIVERGED = 10.0
"""A row whose end point is farther than this multiple of ``||theta_opt||`` from the optimum
(or not finite) counts as diverged: it is left out of the gap and the distance."""


def _diverged(row: Mapping[str, Any], scale: float) -> bool:
    d = row["dist_to_opt"]
    return not (math.isfinite(d) and math.isfinite(row["main"]) and d <= DIVERGED * scale)


def summary(records: Sequence[Record]) -> list[dict[str, Any]]:
    """One entry per (problem, batch, lr scale, Bloop variant), over the seeds.

    ``gap``: per seed, Bloop's front (over lam) minus Mixed's in log10 aux at matched main loss
    (:func:`~torchbloop.experiments.analysis.fronts.aux_gap`; NaN when they do not overlap).
    ``dist``: per seed, the closest end point to the bilevel optimum over lam, as a fraction
    of ``||theta_opt||`` (``mixed_dist`` the same for Mixed). ``leak``: per seed, the mean over
    lam of the late-run leak. ``diverged``: per seed, how many of the variant's lam values
    diverged (see :data:`DIVERGED`).
    """
    from ..analysis import fronts as F

    space = F.Space(log_main=True, log_aux=True)
    out = []
    facts = {
        name: f["dist_origin_to_opt"]
        for rec in records[:1]
        for name, f in rec["config"]["problems"].items()
    }
    for (problem, batch, lr_scale), rows in sorted(_cells(records).items()):
        seeds = sorted({r["seed"] for r in rows})
        scale = facts.get(problem, 1.0)

        def pick(
            seed: int,
            method: str,
            rho: float = 0.0,
            tied: bool = False,
            rows: list[dict[str, Any]] = rows,
        ) -> list[dict[str, Any]]:
            return [
                r
                for r in rows
                if r["seed"] == seed
                and r["method"] == method
                and (method == "mixed" or (r["rho"] == rho and r["tied"] == tied))
            ]

        def ends(sel: list[dict[str, Any]], scale: float = scale) -> Any:
            kept = [r for r in sel if not _diverged(r, scale)]
            return space.xy([F.EndPoint("x", r["lam"], 0, r["main"], r["aux"]) for r in kept])

        def closest(sel: list[dict[str, Any]], scale: float = scale) -> float:
            d = [r["dist_to_opt"] for r in sel if not _diverged(r, scale)]
            return min(d) / scale if d else math.nan

        for _, rho, tied in VARIANTS:
            gaps, dists, mixed_dists, leaks, diverged = [], [], [], [], []
            for seed in seeds:
                b_rows, m_rows = pick(seed, "bloop", rho, tied), pick(seed, "mixed")
                gaps.append(F.aux_gap(ends(b_rows), ends(m_rows)))
                dists.append(closest(b_rows))
                mixed_dists.append(closest(m_rows))
                late = [r["leak_late"] for r in b_rows if math.isfinite(r["leak_late"])]
                leaks.append(float(np.mean(late)) if late else math.nan)
                diverged.append(float(sum(_diverged(r, scale) for r in b_rows)))
            out.append(
                {
                    "problem": problem,
                    "batch": batch,
                    "lr_scale": lr_scale,
                    "rho": rho,
                    "tied": tied,
                    "variant": _variant_name(rho, tied),
                    "gap": F.Spread(tuple(gaps)),
                    "dist": F.Spread(tuple(dists)),
                    "mixed_dist": F.Spread(tuple(mixed_dists)),
                    "leak": F.Spread(tuple(leaks)),
                    "diverged": F.Spread(tuple(diverged)),
                }
            )
    return out


def regime_figure(records: Sequence[Record], path: Path) -> Path:
    """Gap and distance maps per problem, and the full-batch alignment limit on the digits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = summary(records)
    problems = sorted({e["problem"] for e in entries}, key=lambda p: p != "quadratic")
    fig, axes = plt.subplots(len(problems), 3, figsize=(17, 4.6 * len(problems)), squeeze=False)
    variants = [_variant_name(r, t) for _, r, t in VARIANTS]
    for i, problem in enumerate(problems):
        mine = [e for e in entries if e["problem"] == problem]
        keys = sorted({(e["batch"], e["lr_scale"]) for e in mine})
        labels = [f"batch {b}, lr {s:g}/L" for b, s in keys]
        gap = np.full((len(keys), len(variants)), np.nan)
        dist = np.full((len(keys), len(variants) + 1), np.nan)
        for e in mine:
            r, c = keys.index((e["batch"], e["lr_scale"])), variants.index(e["variant"])
            gap[r, c] = e["gap"].mean
            dist[r, c] = e["dist"].mean
            dist[r, -1] = e["mixed_dist"].mean
        for ax, data, cols, title, cmap, lim in (
            (
                axes[i][0],
                gap,
                variants,
                "Bloop - Mixed: log10 aux at matched main (< 0: Bloop's front lower)",
                "RdBu_r",
                0.05,
            ),
            (
                axes[i][1],
                dist,
                [*variants, "Mixed"],
                "closest end point to the bilevel optimum / ||theta_opt|| (over lam)",
                "viridis",
                None,
            ),
        ):
            if lim is None:
                from matplotlib.colors import LogNorm

                im = ax.imshow(
                    np.clip(data, 1e-3, 1.0),
                    cmap=cmap,
                    aspect="auto",
                    norm=LogNorm(vmin=1e-3, vmax=1.0),
                )
            else:
                im = ax.imshow(data, cmap=cmap, aspect="auto", vmin=-lim, vmax=lim)
            for (r, c), v in np.ndenumerate(data):
                ax.text(
                    c,
                    r,
                    ("no overlap" if lim else "diverged") if not np.isfinite(v) else f"{v:.2g}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                )
            ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=7)
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_title(f"{problem}: {title}", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.04)
        ax = axes[i][2]
        full = [
            row
            for rec in records[:1]
            for row in rec["extra"]["rows"]
            if row.get("cell") == "regime"
            and row["problem"] == problem
            and row.get("full_batch")
            and row["method"] == "bloop"
            and row["rho"] == 0.01
            and not row["tied"]
            and round(row["lr_scale"], 6) == max(s for _, s in keys)
        ]
        for row in sorted(full, key=lambda r: r["lam"]):
            t = row["trajectory"]
            ax.plot(t["step"], t["main"], label=f"main, lam {row['lam']:g}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("main loss (full batch)")
        bx = ax.twinx()
        for row in sorted(full, key=lambda r: r["lam"]):
            t = row["trajectory"]
            bx.plot(t["step"], t["leak"], ls=":", label=f"leak, lam {row['lam']:g}")
        bx.set_ylabel("leak lam <pi(g_aux; e), g_main> / ||g_main||^2 (dotted)")
        bx.set_yscale("symlog", linthresh=0.01)
        ax.set_title(
            f"{problem}: Bloop rho 0.01, full batch, lr {max(s for _, s in keys):g}/L, seed {records[0]['spec']['seed'] if records else 0}",
            fontsize=8,
        )
        ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(records: Sequence[Record], out_dir: Path) -> list[Path]:
    """The study's figure (:func:`regime_figure`) as ``regime.png``."""
    return [regime_figure(records, out_dir / "regime.png")]


register(
    Experiment(
        name="regime",
        title="Regime study: gradient noise, learning rate and rho on least squares with a known bilevel optimum",
        paper_ref="Sec. 3; authors' notebook",
        kind="analysis",
        run=run,
        plot=plot,
        methods=("bloop",),
        lams={"smoke": (1.0,), "default": (1.0,), "paper": (1.0,)},
        seeds=(0, 1, 2),
        datasets=("mnist5k",),
        description=(
            "One run per seed covers the whole grid (Bloop and Mixed as rows of one batched "
            "float64 SGD computation; the run's method/lam/rho are placeholders). Problems: the "
            "authors' quadratic and least squares on 200 real MNIST digits (p = 784) with an "
            "L2-to-a-prior aux; batch in {8, 32, full}, lr in {0.05, 0.5} / L, lam in "
            "{0.01, 0.1, 1, 10}, Bloop rho in {0.001, 0.01, 0.1, 1} constant or {0.01, 0.1} tied "
            "to the learning rate, cosine schedule. Also the paper's quadratic setting (SGD 1e-3, "
            "batch 64, lam in logspace(-3, 3, 10) plus 0) for Bloop and Mixed."
        ),
    )
)
