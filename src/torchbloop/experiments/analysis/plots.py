"""Figures for reports (matplotlib, Agg backend). They only read records.

* :func:`pareto_plot`: the paper-style plot; x = main loss, y = aux loss, one colour per
  method, end points as markers (size grows with lam, lam written beside), each method's
  non-dominated front as a line, trajectories faint; a train panel and an eval panel.
* :func:`curve_plot`: the ``curves`` of records, one panel per ``panel`` (or y label).
* :func:`metric_vs_lam_plot`: final metrics against lam, one line per method.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..sweep.registry import Record, format_float
from .pareto import front

METHOD_COLORS = {
    "bloop": "tab:red",
    "mixed": "tab:blue",
    "pcgrad": "tab:green",
    "dynamic_barrier": "tab:purple",
}
_METHOD_SHADES = {
    "bloop": "Reds",
    "mixed": "Blues",
    "pcgrad": "Greens",
    "dynamic_barrier": "Purples",
}
METHOD_LABELS = {
    "bloop": "Bloop",
    "mixed": "Mixed",
    "pcgrad": "PCGrad",
    "dynamic_barrier": "Dynamic Barrier",
}


def group_label(record: Record, multi_rho: bool) -> str:
    """Legend label of a record's group: the method, plus rho when a sweep varies it."""
    method = record["spec"]["method"]
    label = str(METHOD_LABELS.get(method, method))
    if multi_rho and method == "bloop":
        label += f" (rho={format_float(record['spec']['rho'])})"
    return label


def group_records(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records grouped by :func:`group_label`, in a stable order (Bloop first)."""
    rhos = {r["spec"]["rho"] for r in records if r["spec"]["method"] == "bloop"}
    groups: dict[str, list[Record]] = defaultdict(list)
    order = {m: i for i, m in enumerate(METHOD_COLORS)}
    for r in sorted(
        records,
        key=lambda r: (order.get(r["spec"]["method"], 99), r["spec"]["rho"], r["spec"]["lam"]),
    ):
        groups[group_label(r, len(rhos) > 1)].append(r)
    return dict(groups)


def _group_color(groups: Mapping[str, Sequence[Record]], label: str, index: int) -> Any:
    """The method's colour; shades of it when several groups share a method (a rho sweep)."""
    del index  # the colour depends on the method and the group's rank within it only
    method = groups[label][0]["spec"]["method"]
    same = [k for k, g in groups.items() if g[0]["spec"]["method"] == method]
    if len(same) == 1:
        return METHOD_COLORS.get(method, "k")
    shade = 0.35 + 0.65 * same.index(label) / (len(same) - 1)
    return plt.get_cmap(_METHOD_SHADES.get(method, "Greys"))(shade)


def _use_log(values: Sequence[float]) -> bool:
    v = np.asarray([x for x in values if isinstance(x, (int, float)) and math.isfinite(x)])
    return bool(v.size) and bool(np.all(v > 0)) and float(v.max() / v.min()) > 10


def _limits(values: Sequence[float], log: bool) -> tuple[float, float] | None:
    v = np.asarray([x for x in values if math.isfinite(x) and (x > 0 or not log)])
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    if log:
        pad = 0.08 * max(math.log10(hi / lo), 0.2)
        return lo / 10**pad, hi * 10**pad
    pad = 0.08 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-12)
    return lo - pad, hi + pad


def _with_optimum(values: list[float], opt: float, log: bool) -> list[float]:
    lim = _limits(values, log)
    if lim is None or not math.isfinite(opt) or (log and (opt <= 0 or opt < lim[0] / 1e3)):
        return values
    if not log and opt < lim[0] - 2 * (lim[1] - lim[0]):
        return values
    return [*values, opt]


def _draw_optimum(ax: Any, x: float, y: float, xl: Any, yl: Any) -> None:
    """A star at the optimum when it is inside the axes, else a line at its visible coordinate."""
    inside_x = xl is not None and xl[0] <= x <= xl[1]
    inside_y = yl is not None and yl[0] <= y <= yl[1]
    text = f"bilevel optimum ({x:.3g}, {y:.3g})"
    if inside_x and inside_y:
        ax.scatter([x], [y], marker="*", s=220, color="gold", edgecolors="k", zorder=4, label=text)
    elif inside_y:
        ax.axhline(y, color="goldenrod", ls="--", lw=1.2, label=text + ", main off-axis")
    elif inside_x:
        ax.axvline(x, color="goldenrod", ls="--", lw=1.2, label=text + ", aux off-axis")


def pareto_plot(records: Sequence[Record], path: Path, title: str) -> Path:
    """Paper-style Pareto plot (train and eval panels) of the end points of ``records``."""
    groups = group_records(records)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    all_lams = sorted({r["spec"]["lam"] for r in records})
    lam_rank = {lam: i for i, lam in enumerate(all_lams)}
    for ax, split in zip(axes, ("train", "eval")):
        kx, ky = f"{split}_main", f"{split}_aux"
        xs = [r["final"].get(kx, math.nan) for r in records]
        ys = [r["final"].get(ky, math.nan) for r in records]
        optima = [
            r["extra"]["optimum"] for r in records if isinstance(r["extra"].get("optimum"), Mapping)
        ]
        logx, logy = _use_log(xs), _use_log(ys)
        for gi, (label, recs) in enumerate(groups.items()):
            color = _group_color(groups, label, gi)
            for r in recs:
                t = r["trajectory"]
                if kx in t and ky in t:
                    ax.plot(t[kx], t[ky], color=color, alpha=0.15, lw=0.8)
            pts = np.array(
                [[r["final"].get(kx, math.nan), r["final"].get(ky, math.nan)] for r in recs],
                dtype=float,
            )
            sizes = [18 + 10 * lam_rank[r["spec"]["lam"]] for r in recs]
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                s=sizes,
                color=color,
                label=label,
                edgecolors="k",
                linewidths=0.4,
                zorder=3,
            )
            for r, (x, y) in zip(recs, pts):
                if math.isfinite(x) and math.isfinite(y):
                    ax.annotate(
                        format_float(r["spec"]["lam"]),
                        (x, y),
                        fontsize=6,
                        color=color,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
            f = front(pts)
            if len(f) > 1:
                ax.plot(f[:, 0], f[:, 1], color=color, lw=1.6, zorder=2)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        if optima:  # include the optimum unless it is orders of magnitude off (e.g. main = 0)
            xs, ys = (
                _with_optimum(xs, optima[0].get(kx, math.nan), logx),
                _with_optimum(ys, optima[0].get(ky, math.nan), logy),
            )
        xl, yl = _limits(xs, logx), _limits(ys, logy)
        if xl:
            ax.set_xlim(*xl)
        if yl:
            ax.set_ylim(*yl)
        if optima:
            _draw_optimum(ax, optima[0].get(kx, math.nan), optima[0].get(ky, math.nan), xl, yl)
        ax.set_xlabel(f"{split} main loss" + (" (log)" if logx else ""))
        ax.set_ylabel(f"{split} aux loss" + (" (log)" if logy else ""))
        ax.set_title(f"{split}: end points (lam beside), fronts, trajectories faint", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        ax.tick_params(which="minor", labelsize=7)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_plot(curves: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Plot curves (dicts with x, y, label, xlabel, ylabel[, panel, xscale, yscale])."""
    panels: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for c in curves:
        panels[c.get("panel") or c.get("ylabel", "")].append(c)
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.5), squeeze=False)
    for ax, (panel, cs) in zip(axes[0], panels.items()):
        for c in cs:
            ax.plot(
                c["x"],
                c["y"],
                marker="o",
                ms=3,
                label=c.get("label"),
                color=c.get("color"),
                ls=c.get("linestyle", "-"),
            )
        ax.set_xscale(cs[0].get("xscale", "linear"))
        ax.set_yscale(cs[0].get("yscale", "linear"))
        ax.set_xlabel(cs[0].get("xlabel", "x"))
        ax.set_ylabel(cs[0].get("ylabel", "y"))
        ax.set_title(panel, fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        if any(c.get("label") for c in cs):
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_vs_lam_plot(
    records: Sequence[Record], keys: Sequence[tuple[str, str, str]], path: Path, title: str
) -> Path:
    """Final metrics vs lam (lam > 0, log x), one line per method group.

    Args:
        keys: ``(final key, y label, y scale)`` per panel.
    """
    curves = []
    for label, recs in group_records(records).items():
        recs = sorted((r for r in recs if r["spec"]["lam"] > 0), key=lambda r: r["spec"]["lam"])
        for key, ylabel, yscale in keys:
            pts = [(r["spec"]["lam"], r["final"].get(key, math.nan)) for r in recs]
            curves.append(
                {
                    "x": [p[0] for p in pts],
                    "y": [p[1] for p in pts],
                    "label": label,
                    "panel": ylabel,
                    "xlabel": "lam",
                    "ylabel": ylabel,
                    "xscale": "log",
                    "yscale": yscale,
                    "color": METHOD_COLORS.get(recs[0]["spec"]["method"]) if recs else None,
                }
            )
    return curve_plot(curves, path, title)
