"""Figures for reports (matplotlib, Agg backend). They only read records.

* :func:`pareto_plot`: the paper-style plot; x = main loss, y = aux loss, one colour per
  method, end points as markers (size grows with lam, lam written beside), each method's
  non-dominated front as a line, trajectories faint; a train panel and an eval panel. With
  three or more objectives, one panel per pair of objectives and split.
* :func:`curve_plot`: the ``curves`` of records, one panel per ``panel`` (or y label).
* :func:`metric_vs_lam_plot`: final metrics against lam, one line per method.

A method without lam (:attr:`torchbloop.methods.MethodInfo.takes_lam`: MetaBalance, the original
Dynamic Barrier) is drawn as one diamond per seed on the Pareto plot, with no lam and no front,
and has no line against lam.

Names and colours come from the method table (:mod:`.groups`). matplotlib (the
``experiments`` extra) is imported when a figure is drawn, so importing this module never
fails without it: :func:`pyplot` raises :class:`MissingExtraError` naming the extra.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..sweep.registry import Record, format_lam
from .groups import group_method, group_records, lam_key, method_colour, takes_lam
from .pareto import front

__all__ = [
    "MissingExtraError",
    "curve_plot",
    "group_colour",
    "group_records",
    "method_colour",
    "metric_vs_lam_plot",
    "pareto_plot",
    "pyplot",
]

EXTRA_HINT = 'pip install "torchbloop[experiments]"'


class MissingExtraError(ImportError):
    """An optional dependency of the experiments is not installed; the message says how."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend.

    Raises:
        MissingExtraError: matplotlib is not installed (install the ``experiments`` extra).
    """
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            f"Figures need matplotlib, which is not installed: {EXTRA_HINT}"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def group_colour(groups: Mapping[str, Sequence[Record]], label: str) -> Any:
    """The method's table colour; lighter to darker shades of it when several groups share
    a method (a rho sweep or variants), so the groups of one method stay recognisable."""
    method = group_method(groups[label])
    base = method_colour(method)
    same = [k for k, g in groups.items() if group_method(g) == method]
    if len(same) == 1:
        return base
    pyplot()  # says which extra to install when matplotlib is missing
    from matplotlib.colors import to_rgb

    t = same.index(label) / (len(same) - 1)  # 0: lightest, 1: darkest
    mix = 0.55 * (1 - t) - 0.35 * t  # > 0: towards white, < 0: towards black
    rgb = np.asarray(to_rgb(base))
    out = rgb + mix * (1 - rgb) if mix > 0 else rgb * (1 + mix)
    return tuple(float(c) for c in out)


def _has_positive(values: Iterable[Any]) -> bool:
    return any(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


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


def _objective_label(objective: str, objectives: Sequence[str]) -> str:
    """``main``/``aux`` as they are; numbered aux objectives with their priority level."""
    if len(objectives) == 2:
        return f"{objective} loss"
    level = list(objectives).index(objective)
    return f"{objective} loss (level {level})"


def _pareto_panel(
    ax: Any,
    records: Sequence[Record],
    groups: Mapping[str, Sequence[Record]],
    keys: tuple[str, str],
    labels: tuple[str, str],
    lam_rank: Mapping[tuple[float, ...], int],
) -> None:
    """One panel: end points of every group on two final keys, fronts, faint trajectories."""
    kx, ky = keys
    xs = [r["final"].get(kx, math.nan) for r in records]
    ys = [r["final"].get(ky, math.nan) for r in records]
    optima = [
        r["extra"]["optimum"] for r in records if isinstance(r["extra"].get("optimum"), Mapping)
    ]
    logx, logy = _use_log(xs), _use_log(ys)
    for label, recs in groups.items():
        color = group_colour(groups, label)
        for r in recs:
            t = r["trajectory"]
            if kx in t and ky in t:
                ax.plot(t[kx], t[ky], color=color, alpha=0.15, lw=0.8)
        pts = np.array(
            [[r["final"].get(kx, math.nan), r["final"].get(ky, math.nan)] for r in recs],
            dtype=float,
        )
        with_lam = takes_lam(group_method(recs))  # without: one diamond per seed, no lam
        sizes = [18 + 10 * lam_rank[lam_key(r)] if with_lam else 40 for r in recs]
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=sizes,
            color=color,
            label=label if with_lam else f"{label} (no lam)",
            marker="o" if with_lam else "D",
            edgecolors="k",
            linewidths=0.4,
            zorder=3,
        )
        for r, (x, y) in zip(recs, pts):
            if with_lam and math.isfinite(x) and math.isfinite(y):
                ax.annotate(
                    format_lam(r["spec"]["lam"]),
                    (x, y),
                    fontsize=6,
                    color=color,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        f = front(pts)
        if with_lam and len(f) > 1:
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
    ax.set_xlabel(labels[0] + (" (log)" if logx else ""))
    ax.set_ylabel(labels[1] + (" (log)" if logy else ""))
    ax.grid(True, which="both", alpha=0.25)
    ax.tick_params(which="minor", labelsize=7)
    ax.legend(fontsize=8)


def pareto_plot(
    records: Sequence[Record],
    path: Path,
    title: str,
    objectives: Sequence[str] = ("main", "aux"),
) -> Path:
    """Paper-style Pareto plot of the end points of ``records``.

    Two objectives: a train and an eval panel (x = main, y = aux). More: one row per split
    and one panel per pair of objectives (each panel's fronts are those of its pair).
    """
    plt = pyplot()
    groups = group_records(records)
    pairs = list(itertools.combinations(objectives, 2))
    splits = ("train", "eval")
    if len(pairs) == 1:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), squeeze=False)
        cells = [(axes[0][i], split, pairs[0]) for i, split in enumerate(splits)]
    else:
        fig, axes = plt.subplots(2, len(pairs), figsize=(5.2 * len(pairs), 9.6), squeeze=False)
        cells = [
            (axes[i][j], split, pair)
            for i, split in enumerate(splits)
            for j, pair in enumerate(pairs)
        ]
    lam_rank = {lam: i for i, lam in enumerate(sorted({lam_key(r) for r in records}))}
    for ax, split, (ox, oy) in cells:
        _pareto_panel(
            ax,
            records,
            groups,
            (f"{split}_{ox}", f"{split}_{oy}"),
            (
                f"{split} {_objective_label(ox, objectives)}",
                f"{split} {_objective_label(oy, objectives)}",
            ),
            lam_rank,
        )
        ax.set_title(f"{split}: end points (lam beside), fronts, trajectories faint", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_plot(curves: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Plot curves (dicts with x, y, label, xlabel, ylabel[, panel, xscale, yscale, band]).

    ``band``: ``(lower, upper)`` values at each x, drawn shaded in the curve's colour.
    """
    plt = pyplot()
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
            if c.get("band") is not None:
                lo, hi = c["band"]
                ax.fill_between(c["x"], lo, hi, color=c.get("color"), alpha=0.15, lw=0)
        for axis in ("x", "y"):  # log only where the panel has a positive finite value
            scale = cs[0].get(f"{axis}scale", "linear")
            if scale == "log" and not _has_positive(v for c in cs for v in c[axis]):
                scale = "linear"
            getattr(ax, f"set_{axis}scale")(scale)
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

    With several aux weights per run, x is the first (highest-priority) weight. Methods
    without lam (MetaBalance, the original Dynamic Barrier: one run per seed) have no line.

    Args:
        keys: ``(final key, y label, y scale)`` per panel.
    """
    curves = []
    groups = group_records(records)
    for label, recs in groups.items():
        if not takes_lam(group_method(recs)):
            continue
        colour = group_colour(groups, label)
        recs = sorted((r for r in recs if lam_key(r)[0] > 0), key=lam_key)
        for key, ylabel, yscale in keys:
            pts = [(lam_key(r)[0], r["final"].get(key, math.nan)) for r in recs]
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
                    "color": colour,
                }
            )
    return curve_plot(curves, path, title)
