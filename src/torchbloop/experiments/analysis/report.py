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

from ..sweep.registry import Experiment, Record, format_lam, get, lam_levels
from ..sweep.results import LOSS_KEYS, experiment_dir, experiments_in, read_records, spec_of
from .groups import group_label, group_records
from .summary import describe_runs, dominance_sentence, pareto_summary

__all__ = ["endpoint_rows", "md_table", "pareto_summary", "write_experiment_report", "write_report"]


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


def _final_keys(records: Sequence[Record], first: Sequence[str] = LOSS_KEYS) -> list[str]:
    keys = [k for k in first if any(k in r["final"] for r in records)]
    for r in records:
        keys += [k for k in r["final"] if k not in keys]
    return keys


def endpoint_rows(
    records: Sequence[Record], first: Sequence[str] = LOSS_KEYS
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the end-point table: one row per run.

    ``lam`` is a number, or the weights joined by ``;`` for several aux losses; a ``variant``
    column is added when a record has one.
    """
    keys = _final_keys(records, first)
    with_variant = any(r["spec"].get("variant") for r in records)
    header = ["method", "lam", "rho", "seed", "budget", *keys, "wall_time_s"]
    header += ["variant"] if with_variant else []
    rows = []
    for group in group_records(records).values():
        for r in group:
            s = r["spec"]
            lam = s["lam"] if not isinstance(s["lam"], tuple) else ";".join(map(str, s["lam"]))
            rows.append(
                [
                    s["method"],
                    lam,
                    s["rho"],
                    s["seed"],
                    s["budget"],
                    *(r["final"].get(k, math.nan) for k in keys),
                    r["wall_time_s"],
                    *([s.get("variant", "")] if with_variant else []),
                ]
            )
    return header, rows


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table (numbers with 4 significant digits)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def reproduce_command(records: Sequence[Record], name: str, exp: Experiment | None) -> str:
    """The ``torchbloop run`` command that gives ``records`` (defaults of the budget left out)."""
    specs = [spec_of(r) for r in records]
    budget = sorted({s.budget for s in specs})[0]
    parts = [f"torchbloop run {name} --budget {budget}"]
    methods = list(dict.fromkeys(s.method for s in specs))
    levels = sorted({s.levels for s in specs})
    seeds = sorted({s.seed for s in specs})
    rhos = sorted({s.rho for s in specs})
    if exp is None or methods != list(exp.methods):
        parts.append("--methods " + " ".join(methods))
    if exp is None or levels != sorted({lam_levels(x) for x in exp.lams_for(budget)}):
        parts.append("--lams " + " ".join(",".join(repr(x) for x in k) for k in levels))
    if exp is None or seeds != sorted(exp.seeds):
        parts.append("--seeds " + " ".join(map(str, seeds)))
    if exp is None or rhos != sorted(exp.rhos_default()):
        parts.append("--rho " + " ".join(repr(x) for x in rhos))
    return " ".join(parts) + " --out OUT"


def write_experiment_report(out_dir: str | Path, name: str) -> Path:
    """Write ``OUT/<name>/report.md`` (+ figures, endpoints.csv) from its records."""
    from . import plots  # matplotlib: imported here, the CLI says which extra is missing

    records = read_records(out_dir, name)
    exp = _experiment(name)
    edir = experiment_dir(out_dir, name)
    objectives = exp.objectives if exp else ("main", "aux")
    final_keys = exp.final_keys() if exp else LOSS_KEYS
    has_losses = bool(records) and all(all(k in r["final"] for k in final_keys) for r in records)
    kind = exp.kind if exp else ("sweep" if has_losses else "analysis")
    title = exp.title if exp else name
    lines = [f"# {title}", ""]
    if exp:
        lines += [f"Experiment `{name}` ({exp.paper_ref}); kind: {exp.kind}.", ""]
        if exp.description:
            lines += [exp.description, ""]
    lines += [
        f"**This report's runs.** {describe_runs(records, exp)} Reproduce: "
        f"`{reproduce_command(records, name, exp)}` then `torchbloop report OUT`.",
        "",
    ]
    notes = edir / "NOTES.md"
    if notes.is_file():  # the findings, in words, written by whoever ran the experiment
        text = notes.read_text().strip().splitlines()
        lines += ["## Findings", "", *(text[1:] if text and text[0].startswith("#") else text), ""]
    figures: list[Path] = []
    if kind == "sweep" and has_losses:
        figures.append(
            plots.pareto_plot(records, edir / "pareto.png", f"{title}: Pareto fronts", objectives)
        )
    if exp and exp.plot:
        figures += exp.plot(records, edir)
    elif kind == "analysis":
        for r in records:
            if r["curves"]:
                curves = [dict(c, label=c.get("label", k)) for k, c in r["curves"].items()]
                run_id = spec_of(r).run_id
                figures.append(plots.curve_plot(curves, edir / f"curves_{run_id}.png", title))
    if figures:
        lines += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures] + [""]
    if kind == "sweep" and has_losses:
        lines += _pareto_section(pareto_summary(records, objectives))
    if exp and exp.summary:
        lines += [*exp.summary(records), ""]
    header, rows = endpoint_rows(records, final_keys)
    if len(header) > 6:
        lines += [
            "## End points",
            "",
            "One row per run (final eval point). Also in `endpoints.csv`.",
            "",
        ]
        lines += [*md_table(header, rows), ""]
    _write_csv(edir / "endpoints.csv", header, rows)
    scalars = sorted(
        {k for r in records for k, v in r["extra"].items() if isinstance(v, (int, float))}
    )
    if kind == "analysis" and scalars and len(records) <= 50:
        lines += ["## Key values", ""]
        key_rows = [
            [
                group_label(r, False),
                format_lam(r["spec"]["lam"]),
                r["spec"]["seed"],
                *(r["extra"].get(k, "") for k in scalars),
            ]
            for r in records
        ]
        lines += [*md_table(["method", "lam", "seed", *scalars], key_rows), ""]
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
        objectives = ", ".join(s["objectives"])
        lines += [
            f"**{split}** (hypervolume in {s['space']} space of ({objectives}) end points, "
            f"shared reference point {[round(v, 4) for v in s['ref']]}: worst end point over "
            "all methods + 10% of the range; higher is better)",
            "",
        ]
        lines += [*md_table(["method", "hypervolume"], [[g, v] for g, v in s["hv"].items()]), ""]
        lines += [f"- {dominance_sentence(*d)}" for d in s["dominance"]]
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
