"""Markdown reports from the records on disk (never runs anything).

``write_report(OUT)`` writes, for each experiment with records under ``OUT``:
``OUT/<exp>/report.md``, its PNG figures and ``OUT/<exp>/endpoints.csv``; then the index
``OUT/README.md``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..sweep.registry import Experiment, Record, format_float, get
from ..sweep.results import LOSS_KEYS, experiment_dir, experiments_in, read_records
from . import pareto, plots


def _fmt(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def _experiment(name: str) -> Experiment | None:
    try:
        return get(name)
    except ValueError:
        return None


def _final_keys(records: Sequence[Record]) -> list[str]:
    keys = [k for k in LOSS_KEYS if any(k in r["final"] for r in records)]
    for r in records:
        keys += [k for k in r["final"] if k not in keys]
    return keys


def endpoint_rows(records: Sequence[Record]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the end-point table: one row per run."""
    keys = _final_keys(records)
    header = ["method", "lam", "rho", "seed", "budget", *keys, "wall_time_s"]
    rows = []
    for group in plots.group_records(records).values():
        for r in group:
            s = r["spec"]
            rows.append(
                [
                    s["method"],
                    s["lam"],
                    s["rho"],
                    s["seed"],
                    s["budget"],
                    *(r["final"].get(k, math.nan) for k in keys),
                    r["wall_time_s"],
                ]
            )
    return header, rows


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def pareto_summary(records: Sequence[Record]) -> dict[str, Any]:
    """Hypervolumes per group and Bloop-front dominance counts, for train and eval.

    Returns:
        ``{split: {"space": "log10"|"linear", "ref": [x, y], "hv": {group: float},
        "dominance": [(bloop group, other group, dominated, total, reverse dominated, bloop total)]}}``
    """
    groups = plots.group_records(records)
    summary: dict[str, Any] = {}
    for split in ("train", "eval"):
        kx, ky = f"{split}_main", f"{split}_aux"
        pts = {
            g: np.array(
                [[r["final"].get(kx, math.nan), r["final"].get(ky, math.nan)] for r in rs],
                dtype=float,
            )
            for g, rs in groups.items()
        }
        allpts = np.concatenate(list(pts.values())) if pts else np.zeros((0, 2))
        if not np.any(np.all(np.isfinite(allpts), axis=1)):
            continue
        _, log = pareto.to_log(allpts)
        tf = (lambda a: pareto.to_log(a)[0]) if log else (lambda a: a)
        ref = pareto.reference_point(tf(allpts))
        hv = {g: pareto.hypervolume_2d(tf(p), ref) for g, p in pts.items()}
        dominance = []
        for bg, bp in pts.items():
            if groups[bg][0]["spec"]["method"] != "bloop":
                continue
            for og, op in pts.items():
                if groups[og][0]["spec"]["method"] == "bloop":
                    continue
                dominance.append(
                    (
                        bg,
                        og,
                        pareto.dominated_count(pareto.front(bp), op),
                        len(op),
                        pareto.dominated_count(pareto.front(op), bp),
                        len(bp),
                    )
                )
        summary[split] = {
            "space": "log10" if log else "linear",
            "ref": ref.tolist(),
            "hv": hv,
            "dominance": dominance,
        }
    return summary


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_experiment_report(out_dir: str | Path, name: str) -> Path:
    """Write ``OUT/<name>/report.md`` (+ figures, endpoints.csv) from its records."""
    records = read_records(out_dir, name)
    exp = _experiment(name)
    edir = experiment_dir(out_dir, name)
    has_losses = all(all(k in r["final"] for k in LOSS_KEYS) for r in records)
    kind = exp.kind if exp else ("sweep" if has_losses else "analysis")
    title = exp.title if exp else name
    lines = [f"# {title}", ""]
    if exp:
        lines += [f"Experiment `{name}` ({exp.paper_ref}); kind: {exp.kind}.", ""]
        if exp.description:
            lines += [exp.description, ""]
    budgets = sorted({r["spec"]["budget"] for r in records})
    total = sum(r["wall_time_s"] for r in records)
    lines += [
        f"{len(records)} run(s); budget(s): {', '.join(budgets)}; total run time {total:.1f} s "
        f"(sum over runs). Reproduce: `torchbloop run {name} --budget {budgets[0]} --out OUT` "
        "then `torchbloop report OUT`.",
        "",
    ]
    notes = edir / "NOTES.md"
    if notes.is_file():  # the findings, in words, written by whoever ran the experiment
        text = notes.read_text().strip().splitlines()
        lines += ["## Findings", "", *(text[1:] if text and text[0].startswith("#") else text), ""]
    figures: list[Path] = []
    if kind == "sweep" and has_losses:
        figures.append(plots.pareto_plot(records, edir / "pareto.png", f"{title}: Pareto fronts"))
    if exp and exp.plot:
        figures += exp.plot(records, edir)
    elif kind == "analysis":
        for r in records:
            if r["curves"]:
                curves = [dict(c, label=c.get("label", k)) for k, c in r["curves"].items()]
                run_id = f"{r['spec']['method']}_lam{format_float(r['spec']['lam'])}_seed{r['spec']['seed']}"
                figures.append(plots.curve_plot(curves, edir / f"curves_{run_id}.png", title))
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    if kind == "sweep" and has_losses:
        lines += _pareto_section(pareto_summary(records))
    header, rows = endpoint_rows(records)
    if len(header) > 6:
        lines += [
            "## End points",
            "",
            "One row per run (final eval point). Also in `endpoints.csv`.",
            "",
        ]
        lines += [*_md_table(header, rows), ""]
    _write_csv(edir / "endpoints.csv", header, rows)
    scalars = sorted(
        {k for r in records for k, v in r["extra"].items() if isinstance(v, (int, float))}
    )
    if kind == "analysis" and scalars and len(records) <= 50:
        lines += ["## Key values", ""]
        rows = [
            [
                plots.group_label(r, False),
                r["spec"]["lam"],
                r["spec"]["seed"],
                *(r["extra"].get(k, "") for k in scalars),
            ]
            for r in records
        ]
        lines += [*_md_table(["method", "lam", "seed", *scalars], rows), ""]
    extras = sorted({k for r in records for k in r["extra"] if k != "optimum"})
    if extras:
        lines += [
            f"Other recorded values (see the JSON records in `runs/`): {', '.join(extras)}.",
            "",
        ]
    path = edir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _pareto_section(summary: dict[str, Any]) -> list[str]:
    lines = ["## Pareto summary", ""]
    for split, s in summary.items():
        lines += [
            f"**{split}** (hypervolume in {s['space']} space of (main, aux) end points, "
            f"shared reference point {[round(v, 4) for v in s['ref']]}: worst end point over "
            "all methods + 10% of the range; higher is better)",
            "",
        ]
        lines += [*_md_table(["method", "hypervolume"], [[g, v] for g, v in s["hv"].items()]), ""]
        for bg, og, k, n, rk, rn in s["dominance"]:
            lines.append(
                f"- {bg}'s front dominates {k}/{n} of {og}'s end points; "
                f"{og}'s front dominates {rk}/{rn} of {bg}'s."
            )
        lines.append("")
    return lines


def write_report(out_dir: str | Path, experiment_names: Sequence[str] | None = None) -> Path:
    """Write the report of each experiment found in ``out_dir`` (or the given ones) and the index.

    The index ``OUT/README.md`` always lists every experiment that has records under ``out_dir``.

    Returns:
        The path of ``OUT/README.md``.

    Raises:
        ValueError: no records found for the requested experiments.
    """
    root = Path(out_dir)
    found = experiments_in(root)
    wanted = list(experiment_names) if experiment_names is not None else found
    missing = [n for n in wanted if n not in found]
    if missing or not wanted:
        raise ValueError(
            f"No records under {root} for {missing or 'any experiment'}; found: {found}"
        )
    index = ["# Results", "", "| experiment | title | paper | report |", "|---|---|---|---|"]
    for name in wanted:
        write_experiment_report(root, name)
    for name in found:
        exp = _experiment(name)
        index.append(
            f"| `{name}` | {exp.title if exp else ''} | {exp.paper_ref if exp else ''} | "
            f"[{name}/report.md]({name}/report.md) |"
        )
    readme = root / "README.md"
    readme.write_text("\n".join(index) + "\n")
    return readme
