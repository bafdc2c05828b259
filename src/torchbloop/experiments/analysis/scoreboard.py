"""The scoreboard: one row per claim of the paper (method.md section 5), our test, the number with
its spread, a verdict in words and the budget used.

Front claims ("Bloop's front is better") are computed from the records on disk with
:mod:`.fronts`: the aux gap of Bloop against Mixed at matched main loss, per seed, and
:func:`~.fronts.verdict` (reproduced when ``mean + 2 se < 0`` and every seed is below 0; not
reproduced when the gain is below a tolerance beyond the seed noise; inconclusive otherwise,
always with fewer than 3 seeds). The EMA ablation's claims are tested on the per-seed
differences of its end losses (:func:`ema_ablation_claims`). The projection bias and the
conditioning example, which are deterministic, are rows written from their committed reports.

Run ``python -m torchbloop.experiments.analysis.scoreboard docs/results`` to rewrite
``docs/results/scoreboard.md`` and the scoreboard section at the top of
``docs/results/README.md`` (between the ``<!-- scoreboard -->`` markers; the rest of the file is
left as it is).

Example:
    >>> print(scoreboard_table([Claim("1", "c", "t", "n", "reproduced", "b")])[-1])
    | 1 | c | t | n | **reproduced** | b |
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import fronts as F

__all__ = [
    "Claim",
    "comparison_table",
    "ema_ablation_claims",
    "ema_regime_claim",
    "front_claim",
    "main",
    "quadratic_claims",
    "scoreboard_table",
    "versus",
    "write",
]

START, END = "<!-- scoreboard -->", "<!-- /scoreboard -->"
TOL_LOG10 = 0.01
"""Tie tolerance of the gap in log10 aux units (2.3%)."""
TOL_LINEAR = 0.01
"""Tie tolerance of the gap in linear aux units (for the smooth MLP's log-norm aux, 1%)."""


@dataclass(frozen=True)
class Claim:
    """One scoreboard row."""

    id: str
    claim: str
    test: str
    number: str
    verdict: str
    budget: str
    report: str = ""


def scoreboard_table(claims: Sequence[Claim]) -> list[str]:
    """Markdown table lines, one row per claim."""
    lines = [
        "| # | paper's claim | our test | number (mean ± se [min, max] over seeds) | verdict | budget |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        test = _cell(c.test) + (f" ([report]({c.report}))" if c.report else "")
        cells = [_cell(c.id), _cell(c.claim), test, _cell(c.number)]
        lines.append("| " + " | ".join(cells) + f" | **{_cell(c.verdict)}** | {_cell(c.budget)} |")
    return lines


def _cell(text: str) -> str:
    r"""Table-safe text: a ``|`` inside a cell would end it, so it is written ``\|``."""
    return text.replace("|", "\\|")


def _tol(space: F.Space) -> float:
    return TOL_LOG10 if space.log_aux else TOL_LINEAR


def front_claim(
    claim_id: str,
    claim: str,
    points: Sequence[F.EndPoint],
    *,
    budget: str,
    report: str,
    a: str = "bloop",
    b: str = "mixed",
    note: str = "",
) -> Claim:
    """A front claim from end points: the gap of ``a`` vs ``b`` at matched main loss and its verdict."""
    r = F.compare(points, a, b)
    unit = "log10 aux" if r.space.log_aux else "aux"
    v = F.verdict(r.gap, _tol(r.space))
    if r.gap.n == 0:
        v += " (the fronts do not overlap in main loss)"
    elif r.gap.n < 3:
        v += f" ({r.gap.n} seed{'s' if r.gap.n != 1 else ''})"
    number = (
        f"gap {r.gap.text()} {unit}; at {F.NEAR_PLAIN:g} x plain main: {r.gap_near_plain.text()}; "
        f"{b}'s points dominated by {a}: "
        f"{r.b_dominated.mean:.0%}, {a}'s by {b}: {r.a_dominated.mean:.0%}"
    )
    test = f"{a} - {b} aux at matched main ({r.space.describe()}; < 0: {a} better)"
    if r.excluded_lams:
        test += f"; lam {', '.join(f'{x:g}' for x in r.excluded_lams)} degenerate for all, left out"
    if note:
        test += f"; {note}"
    return Claim(claim_id, claim, test, number, v, budget, report)


def _regime_points(records: Sequence[Mapping[str, Any]]) -> list[F.EndPoint]:
    """End points of the paper-setting quadratic rows, with the main loss at theta = 0."""
    from ..tasks.regime import quadratic_problem

    out = []
    for rec in records:
        seed = int(rec["spec"]["seed"])
        prob = quadratic_problem(seed)
        start = float(prob.main(prob.theta_star[None] * 0)[0])
        for row in rec["extra"]["rows"]:
            if row.get("cell") == "paper":
                out.append(
                    F.EndPoint(row["method"], row["lam"], seed, row["main"], row["aux"], start)
                )
    return out


def quadratic_claims(records: Sequence[Mapping[str, Any]], report: str) -> list[Claim]:
    """Claim 3 from the paper-setting rows of the ``regime`` records (several seeds)."""
    points = _regime_points(records)
    if not points:
        return []
    steps = {
        row["steps"]
        for rec in records
        for row in rec["extra"]["rows"]
        if row.get("cell") == "paper"
    }
    budget = (
        f"SGD 1e-3, batch 64, {', '.join(map(str, sorted(steps)))} steps (paper notebook's setting)"
    )
    gap = front_claim(
        "3a",
        "quadratic: Bloop reaches lower main AND aux loss (front below Mixed's)",
        points,
        budget=budget,
        report=report,
    )
    dists: dict[str, list[float]] = {"bloop": [], "mixed": []}
    for rec in records:
        best: dict[str, float] = {}
        for row in rec["extra"]["rows"]:
            if row.get("cell") == "paper" and math.isfinite(row["dist_to_opt"]):
                best[row["method"]] = min(best.get(row["method"], math.inf), row["dist_to_opt"])
        for m in dists:
            if m in best:
                dists[m].append(best[m])
    sb, sm = F.Spread(tuple(dists["bloop"])), F.Spread(tuple(dists["mixed"]))
    closer = sb.n >= 3 and sb.n == sm.n and all(x < y for x, y in zip(sb.values, sm.values))
    dist = Claim(
        "3b",
        "quadratic: Bloop approaches the bilevel optimum (closed form)",
        "closest end point to theta_opt over lam, Bloop vs Mixed",
        f"Bloop {sb.text()}, Mixed {sm.text()} (distance; origin to optimum ~18)",
        "reproduced" if closer else ("inconclusive" if sb.n < 3 else "not reproduced"),
        budget,
        report,
    )
    return [gap, dist]


def ema_regime_claim(records: Sequence[dict[str, Any]], report: str) -> list[Claim]:
    """Claim 9 seen in the regime study: with noisy gradients, a middle rho is closest to the optimum.

    On the quadratic with batch 8 and 32 at lr 0.05 / L: the closest end point to the bilevel
    optimum (over lam) for Bloop with rho = 0.001, 0.01, 0.1, 1 and for Mixed. Reproduced when,
    on every seed and both batch sizes, rho = 0.01 is closer than rho = 0.001 (stale) and
    than rho = 1 (no memory).
    """
    from ..tasks.regime import summary

    if not records:
        return []
    entries = [
        e
        for e in summary(records)
        if e["problem"] == "quadratic"
        and e["batch"] in (8, 32)
        and e["lr_scale"] == 0.05
        and not e["tied"]
    ]
    if not entries:
        return []
    by = {(e["batch"], e["rho"]): e for e in entries}
    ok, enough, parts = True, True, []
    for batch in (8, 32):
        if not all((batch, r) in by for r in (0.001, 0.01, 1.0)):
            return []
        d = {r: by[(batch, r)]["dist"] for r in (0.001, 0.01, 0.1, 1.0)}
        enough = d[0.01].n >= 3
        ok = ok and all(
            m < s and m < n for m, s, n in zip(d[0.01].values, d[0.001].values, d[1.0].values)
        )
        mixed = by[(batch, 0.01)]["mixed_dist"]
        parts.append(
            f"batch {batch}: "
            + ", ".join(f"rho {r:g} {d[r].mean:.3f} ± {d[r].se:.3f}" for r in d)
            + f", Mixed {mixed.mean:.3f}"
        )
    return [
        Claim(
            "9d",
            "EMA: too small rho is stale, too large loses the EMA's benefit (seen in the regime study)",
            "quadratic, lr 0.05/L, cosine, 5000 steps: closest end point to the bilevel optimum "
            "over lam, / ||theta_opt||",
            "; ".join(parts),
            ("reproduced" if ok else "not reproduced") if enough else "inconclusive",
            f"regime study, {len(records)} seeds",
            report,
        )
    ]


STATIC: tuple[Claim, ...] = (
    Claim(
        "1",
        "projection bias: E[d_simple] moves from d_bloop to d_mixed as noise grows, switch near sigma ~ 1",
        "Monte Carlo, p = 100, lam = 1",
        "sigma_switch = 1.003 (deterministic MC; one run)",
        "reproduced",
        "default",
        "projection_bias/report.md",
    ),
    Claim(
        "2",
        "conditioning: Mixed ill-conditioned as lam -> 0; Bloop solves the bilevel problem for every lam",
        "2-D example, full batch, 7 lams",
        "Bloop ends within 7e-5 of (0, 0) for every lam; Mixed at (lam/(1+lam), 0)",
        "reproduced",
        "default",
        "conditioning/report.md",
    ),
)


EMA_RHOS: tuple[float, ...] = (0.001, 0.01, 0.1, 0.9)
"""The rho grid of the EMA ablation (the paper's Sec. 5.5)."""


def _ema_diffs(
    records: Sequence[Mapping[str, Any]], split: str = "eval"
) -> dict[str, dict[str, dict[int, float]]]:
    """Per setting (``"mixed"`` or ``"rho=0.01"`` ...), per loss, per seed: log10 of the end loss."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for r in records:
        s = r["spec"]
        key = "mixed" if s["method"] == "mixed" else f"rho={float(s['rho']):g}"
        for loss in ("main", "aux"):
            v = float(r["final"].get(f"{split}_{loss}", math.nan))
            out.setdefault(key, {}).setdefault(loss, {})[int(s["seed"])] = (
                math.log10(v) if v > 0 else math.nan
            )
    return out


def _paired(
    d: Mapping[str, Mapping[str, Mapping[int, float]]], a: str, b: str, loss: str
) -> F.Spread:
    """Per-seed differences ``a - b`` of one loss, over the seeds both settings have."""
    xa, xb = d.get(a, {}).get(loss, {}), d.get(b, {}).get(loss, {})
    return F.Spread(tuple(xa[s] - xb[s] for s in sorted(set(xa) & set(xb))))


def _above(x: F.Spread) -> bool:
    """Positive beyond the seed noise: mean - 2 se > 0 and every seed > 0 (3+ seeds)."""
    return x.n >= 3 and x.mean - 2 * x.se > 0 and min(x.finite) > 0


def _below(x: F.Spread) -> bool:
    """Negative beyond the seed noise (3+ seeds)."""
    return x.n >= 3 and x.mean + 2 * x.se < 0 and max(x.finite) < 0


def ema_ablation_claims(records: Sequence[Mapping[str, Any]], report: str) -> list[Claim]:
    """Claims 9a-9c from the ``ema_ablation`` records (Bloop at each rho and Mixed, lam = 0.2).

    Every number is a per-seed difference of log10 eval losses (the same seed's batches and
    initialisation), then mean ± se [min, max] over seeds; ties use :data:`TOL_LOG10`.

    - 9a, rho = 0.9 behaves like Mixed: *reproduced* when both losses differ from Mixed's by
      less than the tolerance beyond the noise (``|mean| + 2 se < tol``), *not reproduced* when
      one differs by more (``|mean| - 2 se > tol``).
    - 9b, rho = 0.001 is stale, bad on both losses: *reproduced* when another setting (Mixed or
      another rho) is lower on both losses beyond the noise (dominates it); *not reproduced* when
      against every other setting rho = 0.001 is worse by less than the tolerance on at least one
      loss (``mean + 2 se < tol``).
    - 9c, rho in 0.01-0.1 trades one loss for the other: *reproduced* when going from rho = 0.01
      to 0.1 moves the two losses in opposite directions, each beyond the noise; *not
      reproduced* when both move the same way beyond the noise or both stay within the tolerance.

    Anything else, and fewer than 3 seeds, is *inconclusive*.
    """
    if not records:
        return []
    d = _ema_diffs(records)
    seeds = sorted({int(r["spec"]["seed"]) for r in records})
    steps = records[0].get("config", {}).get("steps", "?")
    lam = records[0]["spec"]["lam"]
    budget = f"{steps} steps (the joint LM's default x 3), {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
    test = f"joint_lm setup, lam = {lam:g}: per-seed differences of log10 eval loss"
    tol = TOL_LOG10

    def few(x: F.Spread) -> str:
        return f"inconclusive ({x.n} seed{'s' if x.n != 1 else ''})"

    out = []
    # 9a
    dm, da = _paired(d, "rho=0.9", "mixed", "main"), _paired(d, "rho=0.9", "mixed", "aux")
    if min(dm.n, da.n) < 3:
        v = few(dm if dm.n <= da.n else da)
    elif all(abs(x.mean) + 2 * x.se < tol for x in (dm, da)):
        v = "reproduced"
    elif any(abs(x.mean) - 2 * x.se > tol for x in (dm, da)):
        v = "not reproduced"
    else:
        v = "inconclusive"
    out.append(
        Claim(
            "9a",
            "EMA ablation: rho = 0.9 behaves like Mixed",
            test + f" (rho 0.9 - Mixed; tie within {tol:g})",
            f"main {dm.text()}, aux {da.text()}",
            v,
            budget,
            report,
        )
    )
    # 9b
    others = [k for k in ("mixed", "rho=0.01", "rho=0.1", "rho=0.9") if k in d]
    pairs = {
        k: (_paired(d, "rho=0.001", k, "main"), _paired(d, "rho=0.001", k, "aux")) for k in others
    }
    n = min((min(x.n, y.n) for x, y in pairs.values()), default=0)
    dominated = [k for k, (x, y) in pairs.items() if _above(x) and _above(y)]
    if n < 3:
        v = f"inconclusive ({n} seed{'s' if n != 1 else ''})"
    elif dominated:
        v = "reproduced"
    elif all(x.mean + 2 * x.se < tol or y.mean + 2 * y.se < tol for x, y in pairs.values()):
        v = "not reproduced"
    else:
        v = "inconclusive"
    number = "; ".join(
        f"vs {k.replace('=', ' ')}: main {x.text()}, aux {y.text()}" for k, (x, y) in pairs.items()
    )
    if dominated:
        number += f" (dominated by {', '.join(k.replace('=', ' ') for k in dominated)})"
    out.append(
        Claim(
            "9b",
            "EMA ablation: rho = 0.001 is stale (bad on both losses)",
            test + " (rho 0.001 - each other setting; > 0: rho 0.001 worse)",
            number,
            v,
            budget,
            report,
        )
    )
    # 9c
    dm, da = _paired(d, "rho=0.1", "rho=0.01", "main"), _paired(d, "rho=0.1", "rho=0.01", "aux")
    if min(dm.n, da.n) < 3:
        v = few(dm if dm.n <= da.n else da)
    elif (_above(dm) and _below(da)) or (_below(dm) and _above(da)):
        v = "reproduced"
    elif (
        (_above(dm) and _above(da))
        or (_below(dm) and _below(da))
        or all(abs(x.mean) + 2 * x.se < tol for x in (dm, da))
    ):
        v = "not reproduced"
    else:
        v = "inconclusive"
    vs_mixed = "; ".join(
        f"rho {r:g} - Mixed: main {_paired(d, f'rho={r:g}', 'mixed', 'main').text()}, "
        f"aux {_paired(d, f'rho={r:g}', 'mixed', 'aux').text()}"
        for r in (0.01, 0.1)
    )
    out.append(
        Claim(
            "9c",
            "EMA ablation: rho in 0.01-0.1 trades one loss for the other",
            test + " (rho 0.1 - rho 0.01; a trade-off: the two losses move in opposite directions)",
            f"main {dm.text()}, aux {da.text()}; {vs_mixed}",
            v,
            budget,
            report,
        )
    )
    return out


def _read(results: Path, name: str) -> list[dict[str, Any]]:
    """Records of ``name`` under ``results``; ``name`` may be ``"sub/experiment"`` (a sub-root)."""
    from ..sweep.results import read_records

    root, _, exp = name.rpartition("/")
    base = results / root if root else results
    if not (base / exp / "runs").is_dir():
        return []
    return list(read_records(base, exp))


PAPER_FRACTION: dict[str, str] = {
    "smooth_mlp_mnist_paper/smooth_mlp_mnist": (
        "the paper's 100 epochs, 6.4% of its steps (5000 digits, not 60k)"
    ),
    "smooth_mlp_mnist": "20% of the paper's epochs, 1.3% of its steps (5000 digits, not 60k)",
    "smooth_mlp": "20 of the paper's 100 epochs, Fashion-MNIST instead of MNIST",
    "smooth_mlp_demo/smooth_mlp": (
        "2.6 of the paper's 100 epochs (the demo's budget), Fashion-MNIST instead of MNIST"
    ),
    "small_weights": "1 epoch of a 0.1 M-parameter CNN on Fashion-MNIST (paper: ResNet50 on ImageNet)",
    "multitask": "10 epochs of 4000 overlaid pairs, small CNN (paper: ResNet18, CIFAR-10 + MNIST)",
    "multitask_paper/multitask": (
        "102 epochs of 4000 overlaid pairs (the experiment's paper budget), small CNN "
        "(paper: ResNet18, CIFAR-10 + MNIST)"
    ),
    "joint_lm": "400 steps of a 0.14 M-parameter 2-layer model (paper: 12 layers, far longer)",
    "translation": "300 steps of a 0.15 M-parameter 1+1-layer model (paper: 6+6 layers)",
    "negative_case": "0.64 epoch of a small CNN",
}
"""What each experiment's default budget is, against the paper's (the scoreboard's budget column)."""


def _sweep_budget(records: Sequence[Mapping[str, Any]], name: str = "") -> str:
    cfg = records[0].get("config", {}) if records else {}
    seeds = sorted({int(r["spec"]["seed"]) for r in records})
    parts = []
    for key in ("epochs", "steps"):
        if key in cfg:
            parts.append(f"{cfg[key]} {key}")
    parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    exp = name if name in PAPER_FRACTION else name.rpartition("/")[2]
    if exp in PAPER_FRACTION:
        parts.append(PAPER_FRACTION[exp])
    return ", ".join(parts)


FRONT_CLAIMS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # (row id, experiment dir(s) under the results root, "a|b": the first with records, claim, splits)
    (
        "4",
        "smooth_mlp_mnist",
        "smooth net (MNIST): Bloop's front clearly better on {split}",
        ("train", "eval"),
    ),
    (
        "4P",
        "smooth_mlp_mnist_paper/smooth_mlp_mnist",
        "smooth net (MNIST), the paper's 100 epochs: Bloop's front clearly better on {split}",
        ("train", "eval"),
    ),
    (
        "4D",
        "smooth_mlp_demo/smooth_mlp",
        "smooth net (Fashion-MNIST), short budget: Bloop's front better on {split}",
        ("train", "eval"),
    ),
    (
        "4F",
        "smooth_mlp",
        "smooth net (Fashion-MNIST): Bloop's front better on {split}",
        ("train", "eval"),
    ),
    (
        "5",
        "small_weights",
        "small weights: Bloop's front clearly better on {split}",
        ("train", "eval"),
    ),
    ("6", "seeds/multitask|multitask", "multi-task: slightly better front ({split})", ("eval",)),
    (
        "6P",
        "multitask_paper/multitask",
        "multi-task, 10x longer: slightly better front ({split})",
        ("eval",),
    ),
    ("7", "joint_lm", "joint LM: clearly better front on {split}", ("train", "eval")),
    ("8", "translation", "translation: clearly better front on {split}", ("train", "eval")),
    (
        "10",
        "negative_case",
        "negative case: all methods alike ({split}; a gap near 0 is the claim)",
        ("eval",),
    ),
)


def claims(results: str | Path) -> list[Claim]:
    """All scoreboard rows from the records under ``results`` (rows whose records are missing are left out)."""
    results = Path(results)
    out: list[Claim] = list(STATIC)
    regime = _read(results, "regime")
    out += quadratic_claims(regime, "regime/report.md")
    for cid, names, text, splits in FRONT_CLAIMS:
        recs: list[dict[str, Any]] = []
        name = ""
        for name in names.split("|"):  # the first of the alternatives that has records
            recs = [r for r in _read(results, name) if r["spec"]["method"] in ("bloop", "mixed")]
            if recs:
                break
        if not recs:
            continue
        for i, split in enumerate(splits):
            suffix = "abcdef"[i] if len(splits) > 1 else ""
            points = F.end_points(recs, split)
            c = front_claim(
                cid + suffix,
                text.format(split=split),
                points,
                budget=_sweep_budget(recs, name),
                report=f"{name}/report.md",
            )
            if name == "negative_case":
                c = _negative(c, points)
            out.append(c)
    out += ema_ablation_claims(_read(results, "ema_ablation"), "ema_ablation/report.md")
    out += ema_regime_claim(regime, "regime/report.md")
    return out


def _negative(c: Claim, points: Sequence[F.EndPoint]) -> Claim:
    """The negative case claims a tie: reproduced when the gap is within tolerance beyond noise."""
    r = F.compare(points, "bloop", "mixed")
    g, tol = r.gap, _tol(r.space)
    if g.n < 3:
        v = f"inconclusive ({g.n} seed{'s' if g.n != 1 else ''})"
    elif abs(g.mean) + 2 * g.se < tol:
        v = "reproduced"
    elif abs(g.mean) - 2 * g.se > tol:
        v = "not reproduced"
    else:
        v = "inconclusive"
    return Claim(c.id, c.claim, c.test, c.number, v, c.budget, c.report)


COMPARISON = "comparison"
"""The results sub-root of the all-methods comparison (``docs/results/comparison``)."""

COMPARISON_CELLS: tuple[tuple[str, str], ...] = (
    ("quadratic", "train"),
    ("smooth_mlp_mnist", "train"),
    ("smooth_mlp_mnist", "eval"),
)
"""The (experiment, split) columns of the methods table."""


def versus(gap: F.Spread, tol: float, *, n_min: int = 3) -> str:
    """Words for a method's gap against Bloop (``aux_method - aux_bloop``, < 0: the method lower).

    * ``"better than Bloop"``: ``mean + 2 se < 0`` and every seed below 0;
    * ``"worse than Bloop"``: ``mean - 2 se > 0`` and every seed above 0;
    * ``"tie"``: ``|mean| + 2 se < tol`` (within the tie tolerance beyond the seed noise);
    * ``"unclear"``: anything else, and whenever fewer than ``n_min`` seeds have a gap;
    * ``"no overlap in main loss"``: no seed has a gap (the fronts cover different main losses).

    Example:
        >>> versus(F.Spread((0.2, 0.3, 0.25)), tol=0.01)
        'worse than Bloop'
        >>> versus(F.Spread((0.001, -0.001, 0.0)), tol=0.01)
        'tie'
    """
    if gap.n == 0:
        return "no overlap in main loss"
    if gap.n < n_min:
        return f"unclear ({gap.n} seed{'s' if gap.n != 1 else ''})"
    m, se = gap.mean, gap.se
    if m + 2 * se < 0 and gap.hi < 0:
        return "better than Bloop"
    if m - 2 * se > 0 and gap.lo > 0:
        return "worse than Bloop"
    if abs(m) + 2 * se < tol:
        return "tie"
    return "unclear"


def comparison_table(results: str | Path) -> list[str]:
    """One row per method of the comparison sweeps (``results/comparison/<experiment>``): its
    aux gap against Bloop at matched main loss per (experiment, split), with seed spread and
    :func:`versus` words. Empty when the comparison has no records."""
    from torchbloop.methods import METHODS

    results = Path(results)
    cells: list[tuple[str, str, list[F.EndPoint]]] = []
    for exp, split in COMPARISON_CELLS:
        recs = _read(results, f"{COMPARISON}/{exp}")
        if recs:
            cells.append((exp, split, F.end_points(recs, split)))
    if not cells:
        return []
    methods = [
        m for m in METHODS if m != "bloop" and any(p.method == m for *_, ps in cells for p in ps)
    ]
    dists = _closest_to_optimum(_read(results, f"{COMPARISON}/quadratic"))
    header = "| method | " + " | ".join(f"{e} ({s})" for e, s, _ in cells)
    header += " | quadratic: closest end point to the bilevel optimum |" if dists else " |"
    lines = [header, "|---" * (len(cells) + 1 + bool(dists)) + "|"]
    for m in methods:
        row = [METHODS[m].label + ("" if METHODS[m].takes_lam else " (no lam: one point)")]
        for _, _, points in cells:
            if not any(p.method == m for p in points) or not any(
                p.method == "bloop" for p in points
            ):
                row.append("not run")
                continue
            r = F.compare(points, m, "bloop")
            unit = "log10 aux" if r.space.log_aux else "aux"
            row.append(f"{r.gap.text()} {unit}: **{versus(r.gap, _tol(r.space))}**")
        if dists:
            row.append(_distance_cell(dists, m))
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def _closest_to_optimum(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, float]]:
    """``{method: {seed: the smallest dist_to_bilevel_opt over its end points}}``."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        d = r["final"].get("dist_to_bilevel_opt", math.nan)
        if math.isfinite(d):
            seeds = out.setdefault(r["spec"]["method"], {})
            seed = int(r["spec"]["seed"])
            seeds[seed] = min(seeds.get(seed, math.inf), float(d))
    return out


def _distance_cell(dists: Mapping[str, Mapping[int, float]], method: str) -> str:
    """The method's closest distance, minus Bloop's, per seed (< 0: closer than Bloop); the
    tie tolerance is 1% of Bloop's mean distance."""
    mine, bloop = dists.get(method, {}), dists.get("bloop", {})
    seeds = sorted(set(mine) & set(bloop))
    if not seeds:
        return "not run"
    diff = F.Spread(tuple(mine[s] - bloop[s] for s in seeds))
    tol = 0.01 * float(np.mean([bloop[s] for s in seeds]))
    own = F.Spread(tuple(mine[s] for s in seeds))
    return f"{own.mean:.3g} ({diff.text()} vs Bloop): **{versus(diff, tol)}**"


def write(results: str | Path) -> Path:
    """Write ``results/scoreboard.md`` and the marked section of ``results/README.md``."""
    results = Path(results)
    table = scoreboard_table(claims(results))
    text = "\n".join(
        [
            "## Scoreboard: the paper's claims, tested",
            "",
            "Bloop against Mixed (the paper's main baseline). *gap*: Bloop's aux loss minus Mixed's at",
            "matched main loss, averaged over the main-loss interval both fronts cover (negative: Bloop",
            "better), per seed, then mean ± standard error [min, max] over seeds. Verdicts: *reproduced*",
            "when mean + 2 se < 0 and every seed < 0; *not reproduced* when the gain is below 0.01",
            "(log10 aux, or aux units when the aux can be negative) beyond the seed noise; *inconclusive*",
            "otherwise and whenever fewer than 3 seeds exist. Computed by",
            "`python -m torchbloop.experiments.analysis.scoreboard docs/results`. Findings in prose:",
            "each experiment's `NOTES.md`; the regime study in `regime/NOTES.md`; guidance in",
            "[choosing_lam_rho.md](choosing_lam_rho.md).",
            "",
            *table,
            "",
            *_comparison_section(results),
        ]
    )
    # a page of its own starts at H1 (the docs site renders it); the README's block is a section
    page = text.replace("## Scoreboard", "# Scoreboard", 1).replace("\n### ", "\n## ")
    (results / "scoreboard.md").write_text(page)
    readme = results / "README.md"
    old = readme.read_text() if readme.exists() else "# Results\n"
    block = f"{START}\n{text}{END}\n"
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) + 1 :]
    else:
        head, _, rest = old.partition("\n")
        new = f"{head}\n\n{block}\n{rest.lstrip()}"
    readme.write_text(new)
    return readme


def _comparison_section(results: Path) -> list[str]:
    table = comparison_table(results)
    if not table:
        return []
    return [
        "### The other methods against Bloop (the Table-1 comparison)",
        "",
        "Each method's aux loss minus Bloop's at matched main loss (negative: the method reaches",
        "a lower aux loss than Bloop at the same main loss), per seed, then mean ± se [min, max];",
        "a method without lam is one point per seed, compared on Bloop's front at its own main",
        "loss. *better/worse than Bloop*: mean ± 2 se and every seed on one side of 0; *tie*:",
        "|mean| + 2 se below the tie tolerance; *unclear* otherwise or with fewer than 3 seeds;",
        "*no overlap*: the method's end points lie outside the main losses Bloop's front covers.",
        "Last column: the smallest distance to the bilevel optimum over the method's end points",
        "(per seed), then its difference to Bloop's (< 0: closer than Bloop; tie within 1% of",
        "Bloop's distance).",
        "From the records in",
        f"`{COMPARISON}/`; the findings in words: [{COMPARISON}/report.md]({COMPARISON}/report.md).",
        "",
        *table,
        "",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m torchbloop.experiments.analysis.scoreboard RESULTS_DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not Path(args[0]).is_dir():
        print(
            "usage: python -m torchbloop.experiments.analysis.scoreboard RESULTS_DIR",
            file=sys.stderr,
        )
        return 2
    print(write(args[0]))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
