"""Numbers and sentences about a set of records: what ran, hypervolumes, dominance.

Everything here reads records only (no matplotlib), so the CLI prints it without the plotting
extra. :func:`pareto_summary` works for any number of objectives (the experiment's
``objectives``, two by default): exact hypervolumes (:func:`.pareto.hypervolume`) and, for
every pair of groups, how many of one's end points the other's front dominates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..sweep.registry import Experiment, Record, format_float, format_lam
from . import pareto
from .groups import group_records, lam_key, method_label, takes_rho

SPLITS: tuple[str, ...] = ("train", "eval")


def _values(xs: Sequence[Any]) -> str:
    return "{" + ", ".join(xs) + "}"


def describe_runs(records: Sequence[Record], exp: Experiment | None = None) -> str:
    """One sentence saying what ``records`` are: methods, lam grid, rho, seeds, budgets, time.

    Every value is read from the records, so the sentence describes the run it comes from
    (a smoke run's four lams, not the budget the experiment's description has in mind).

    Example:
        >>> r = {"spec": {"method": "mixed", "lam": 0.1, "rho": 0.01, "seed": 0,
        ...      "budget": "smoke", "variant": ""}, "wall_time_s": 2.0}
        >>> describe_runs([r])
        '1 run(s): methods Mixed; lam in {1e-01}; seeds {0}; budget smoke; total run time 2.0 s (sum over runs).'
    """
    specs = [r["spec"] for r in records]
    methods: list[str] = []
    for group in group_records(records).values():  # table order
        s = group[0]["spec"]
        label = method_label(s["method"]) + (f" ({s['variant']})" if s.get("variant") else "")
        if label not in methods:
            methods.append(label)
    lams = sorted({lam_key(r) for r in records})
    levels = {len(k) for k in lams}
    lam_text = f"lam in {_values([format_lam(k) for k in lams])}"
    if levels != {1}:
        lam_text += f" (one weight per aux loss, {'/'.join(str(n) for n in sorted(levels))})"
    parts = [f"{len(records)} run(s): methods {', '.join(methods)}", lam_text]
    rhos = sorted({s["rho"] for s in specs if takes_rho(s["method"])})
    if rhos:
        parts.append(f"rho in {_values([format_float(x) for x in rhos])}")
    parts.append(f"seeds {_values([str(x) for x in sorted({s['seed'] for s in specs})])}")
    budgets = sorted({s["budget"] for s in specs})
    parts.append(f"budget{'s' if len(budgets) > 1 else ''} {', '.join(budgets)}")
    total = sum(float(r["wall_time_s"]) for r in records)
    return "; ".join(parts) + f"; total run time {total:.1f} s (sum over runs)."


def _points(recs: Sequence[Record], keys: Sequence[str]) -> np.ndarray:
    return np.array([[r["final"].get(k, math.nan) for k in keys] for r in recs], dtype=float)


def pareto_summary(
    records: Sequence[Record], objectives: Sequence[str] = ("main", "aux")
) -> dict[str, Any]:
    """Hypervolumes per group and front dominance between every pair of groups, per split.

    The reference point is shared by all groups: the worst end point over all of them plus
    10% of the range per objective, in log10 space when every end point is positive.

    Returns:
        ``{split: {"space": "log10"|"linear", "ref": [...], "objectives": [...],
        "hv": {group: float}, "dominance": [(a, b, k, n, rk, rn)]}}`` where ``a``'s front
        dominates ``k`` of ``b``'s ``n`` end points and ``b``'s dominates ``rk`` of ``a``'s
        ``rn``; one entry per unordered pair of groups, in group order.
    """
    groups = group_records(records)
    summary: dict[str, Any] = {}
    for split in SPLITS:
        keys = [f"{split}_{o}" for o in objectives]
        pts = {g: _points(rs, keys) for g, rs in groups.items()}
        allpts = np.concatenate(list(pts.values())) if pts else np.zeros((0, len(keys)))
        if not np.any(np.all(np.isfinite(allpts), axis=1)):
            continue
        _, log = pareto.to_log(allpts)
        tf = (lambda a: pareto.to_log(a)[0]) if log else (lambda a: a)
        ref = pareto.reference_point(tf(allpts))
        hv = {g: pareto.hypervolume(tf(p), ref) for g, p in pts.items()}
        dominance = [
            (
                a,
                b,
                pareto.dominated_count(pareto.front(pts[a]), pts[b]),
                len(pts[b]),
                pareto.dominated_count(pareto.front(pts[b]), pts[a]),
                len(pts[a]),
            )
            for a, b in itertools.combinations(pts, 2)
        ]
        summary[split] = {
            "space": "log10" if log else "linear",
            "ref": ref.tolist(),
            "objectives": list(objectives),
            "hv": hv,
            "dominance": dominance,
        }
    return summary


def dominance_sentence(a: str, b: str, k: int, n: int, rk: int, rn: int) -> str:
    """``"A's front dominates k/n of B's end points; B's front dominates rk/rn of A's."``"""
    return (
        f"{a}'s front dominates {k}/{n} of {b}'s end points; "
        f"{b}'s front dominates {rk}/{rn} of {a}'s."
    )
