"""Front metrics that answer the paper's claim "at the same main loss, a lower aux loss", with seeds.

The paper's claims are about Pareto fronts of end points (one run per lam). Three metrics
compare two methods A and B here, each computed per seed (A's and B's runs of the same seed
share data, initialisation and batch order, so the comparison is paired) and summarised over
the seeds as a mean with its standard error and min-max (:class:`Spread`):

1. **Aux gap at matched main loss** (:func:`aux_gap`): each method's front (its non-dominated
   end points over lam) is a piecewise-linear curve ``aux(main)`` in the comparison
   :class:`Space` (log10 of a coordinate when all its values are positive, else linear). Over
   the main-loss interval BOTH fronts cover, the gap is the mean of
   ``aux_A(main) - aux_B(main)`` on a uniform grid: negative means A reaches a lower aux loss
   at the same main loss (in log10 space, -0.1 is 21% lower). NaN when the fronts do not
   overlap in main loss.
2. **Dominance share** (:func:`dominated_share`): the share of A's end points that some end
   point of B dominates, and the other way round.
3. **Hypervolume with a fixed reference point** (:func:`plain_reference`): the reference is
   fixed by plain training, not by the methods being compared: ``(2 x main loss of plain
   training, aux loss of plain training)``, plain training being the mean over seeds of the
   ``lam = 0`` runs of Mixed (which is plain training; of any method if Mixed has none). End
   points outside that box (main loss more than doubled, or aux no better than plain
   training) add nothing. Lam values whose end points are degenerate for EVERY method (the
   seed-mean main loss less than 1% below its value at initialisation: no progress on the main task, as
   a network collapsed to chance by a too strong penalty) are left out of all three metrics and
   listed (:func:`degenerate_lams`). A single run that made no progress (:func:`collapsed`)
   is left out of its method's front for the aux gaps of point 1, even where other methods did
   progress at its lam: the front would otherwise be interpolated towards a collapsed network.

A secondary number, declared before the sweeps were read: the gap at ONE main loss,
:data:`NEAR_PLAIN` x plain training's (a 5% higher main loss than plain training), the regime
the paper argues for (the main loss kept near its minimum); NaN when either front does not
reach it (:func:`gap_at`).

Example:
    >>> a = [EndPoint("a", lam, 0, m, x) for lam, m, x in [(0.1, 1.0, 3.0), (1.0, 2.0, 1.0)]]
    >>> b = [EndPoint("b", lam, 0, m, x) for lam, m, x in [(0.1, 1.0, 4.0), (1.0, 2.0, 2.0)]]
    >>> space = Space(log_main=False, log_aux=False)
    >>> aux_gap(space.xy(a), space.xy(b))
    -1.0
    >>> dominated_share(space.xy(b), space.xy(a))
    1.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .pareto import front, hypervolume_2d

__all__ = [
    "EndPoint",
    "PairResult",
    "Reference",
    "Space",
    "Spread",
    "aux_gap",
    "collapsed",
    "common_interval",
    "compare",
    "degenerate_lams",
    "dominated_share",
    "end_points",
    "gap_at",
    "interpolate_front",
    "pair_table",
    "plain_reference",
    "plot_fronts",
    "swept",
    "verdict",
    "write_front_report",
]

GRID_POINTS = 101
"""Grid of the matched-main comparison over the common main-loss interval."""
NEAR_PLAIN = 1.05
"""The secondary comparison point: 5% above plain training's main loss."""
NO_PROGRESS = 0.01
"""An end main loss less than 1% below the initial one counts as no progress (degenerate)."""
MAIN_FACTOR = 2.0
"""The reference point's main loss is this multiple of plain training's."""


@dataclass(frozen=True)
class EndPoint:
    """The end of one run: method (label), lam, seed, the two losses of one split, and the main
    loss at initialisation (step 0; NaN when unknown)."""

    method: str
    lam: float
    seed: int
    main: float
    aux: float
    start_main: float = math.nan


def end_points(
    records: Iterable[Mapping[str, Any]], split: str = "train", methods: Sequence[str] = ()
) -> list[EndPoint]:
    """End points of sweep records for ``split`` (``"train"`` or ``"eval"``).

    A method run at several rho values is labelled ``"bloop@rho=0.01"`` and so on; with one
    rho, by its name. ``methods`` keeps only those methods (by name) when given.
    """
    recs = [r for r in records if not methods or r["spec"]["method"] in methods]
    rhos: dict[str, set[float]] = defaultdict(set)
    for r in recs:
        rhos[r["spec"]["method"]].add(float(r["spec"]["rho"]))
    out = []
    for r in recs:
        s = r["spec"]
        label = s["method"] if len(rhos[s["method"]]) == 1 else f"{s['method']}@rho={s['rho']:g}"
        start = r.get("trajectory", {}).get(f"{split}_main") or [math.nan]
        out.append(
            EndPoint(
                label,
                float(s["lam"]),
                int(s["seed"]),
                float(r["final"].get(f"{split}_main", math.nan)),
                float(r["final"].get(f"{split}_aux", math.nan)),
                float(start[0]),
            )
        )
    return out


@dataclass(frozen=True)
class Space:
    """Where fronts are compared: log10 or linear, per coordinate."""

    log_main: bool
    log_aux: bool

    @classmethod
    def choose(cls, points: Sequence[EndPoint]) -> Space:
        """log10 for a coordinate whose finite values are all positive, else linear."""
        mains = [p.main for p in points if math.isfinite(p.main)]
        auxs = [p.aux for p in points if math.isfinite(p.aux)]
        return cls(log_main=bool(mains) and min(mains) > 0, log_aux=bool(auxs) and min(auxs) > 0)

    def xy(self, points: Sequence[EndPoint]) -> NDArray[np.float64]:
        """``[n, 2]`` coordinates of ``points`` in this space (NaN for non-positive logs)."""
        arr = np.array([[p.main, p.aux] for p in points], dtype=np.float64).reshape(-1, 2)
        return self.transform(arr)

    def transform(self, arr: NDArray[np.float64]) -> NDArray[np.float64]:
        """``[n, 2]`` (main, aux) -> this space."""
        out = np.array(arr, dtype=np.float64, copy=True).reshape(-1, 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            for col, log in ((0, self.log_main), (1, self.log_aux)):
                if log:
                    out[:, col] = np.where(out[:, col] > 0, np.log10(out[:, col]), np.nan)
        return out

    def describe(self) -> str:
        """E.g. ``"log10 main, linear aux"``."""
        return (
            f"{'log10' if self.log_main else 'linear'} main, "
            f"{'log10' if self.log_aux else 'linear'} aux"
        )


@dataclass(frozen=True)
class Spread:
    """Mean, standard error and min-max of per-seed values (NaN values are left out)."""

    values: tuple[float, ...]

    @property
    def finite(self) -> list[float]:
        """The values that are finite."""
        return [v for v in self.values if math.isfinite(v)]

    @property
    def n(self) -> int:
        """How many finite values."""
        return len(self.finite)

    @property
    def mean(self) -> float:
        """Mean of the finite values (NaN if none)."""
        return float(np.mean(self.finite)) if self.finite else math.nan

    @property
    def se(self) -> float:
        """Standard error of the mean (NaN with fewer than two values)."""
        v = self.finite
        return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan

    @property
    def lo(self) -> float:
        """Smallest finite value."""
        return min(self.finite) if self.finite else math.nan

    @property
    def hi(self) -> float:
        """Largest finite value."""
        return max(self.finite) if self.finite else math.nan

    def text(self, digits: int = 3) -> str:
        """``"mean +- se [lo, hi] (n seeds)"``."""
        if not self.finite:
            return "n/a"
        f = f"{{:.{digits}g}}"
        se = f" ± {f.format(self.se)}" if self.n > 1 else ""
        rng = f" [{f.format(self.lo)}, {f.format(self.hi)}]" if self.n > 1 else ""
        return f"{f.format(self.mean)}{se}{rng} (n={self.n})"


def interpolate_front(
    front_xy: NDArray[np.float64], xs: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The front's aux at main ``xs`` by linear interpolation; NaN outside the front's span.

    ``front_xy`` is a front as :func:`~torchbloop.experiments.analysis.pareto.front` returns it
    (sorted by main, aux decreasing). A single-point front is defined at its main loss only.
    """
    xs = np.asarray(xs, dtype=np.float64)
    if len(front_xy) == 0:
        return np.full(xs.shape, np.nan)
    x, y = front_xy[:, 0], front_xy[:, 1]
    inside = (xs >= x[0]) & (xs <= x[-1])
    out = np.full(xs.shape, np.nan)
    out[inside] = np.interp(xs[inside], x, y)
    return out


def common_interval(
    a_xy: NDArray[np.float64], b_xy: NDArray[np.float64]
) -> tuple[float, float] | None:
    """The main-loss interval both fronts span, or None when they do not overlap (or touch).

    A single-point front (a method without lam, see
    :attr:`torchbloop.methods.MethodInfo.takes_lam`, or one seed's lone finite end point)
    spans its own main loss: the interval is that one value when the other front spans it.

    Example:
        >>> common_interval(np.array([[2.0, 1.0]]), np.array([[1.0, 3.0], [3.0, 1.0]]))
        (2.0, 2.0)
        >>> common_interval(np.array([[4.0, 1.0]]), np.array([[1.0, 3.0], [3.0, 1.0]])) is None
        True
    """
    fa, fb = front(a_xy), front(b_xy)
    if len(fa) == 0 or len(fb) == 0:
        return None
    lo, hi = max(fa[0, 0], fb[0, 0]), min(fa[-1, 0], fb[-1, 0])
    if hi > lo or (hi == lo and min(len(fa), len(fb)) == 1):
        return (float(lo), float(hi))
    return None


def aux_gap(a_xy: NDArray[np.float64], b_xy: NDArray[np.float64], grid: int = GRID_POINTS) -> float:
    """Mean of ``aux_A - aux_B`` over the common main-loss interval of the two fronts.

    Negative: A's front is below B's (lower aux at the same main loss). NaN: no overlap. A
    single-point front is compared at its own main loss (:func:`common_interval`).

    Example:
        >>> aux_gap(np.array([[2.0, 1.0]]), np.array([[1.0, 3.0], [3.0, 1.0]]))
        -1.0
    """
    interval = common_interval(a_xy, b_xy)
    if interval is None:
        return math.nan
    xs = np.linspace(interval[0], interval[1], grid)
    diff = interpolate_front(front(a_xy), xs) - interpolate_front(front(b_xy), xs)
    return float(np.mean(diff))


def gap_at(a_xy: NDArray[np.float64], b_xy: NDArray[np.float64], main: float) -> float:
    """``aux_A - aux_B`` at one main loss (in the space of the points); NaN outside either front.

    Example:
        >>> gap_at(np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([[1.0, 3.0], [3.0, 1.0]]), 2.0)
        -1.0
    """
    x = np.array([main])
    return float((interpolate_front(front(a_xy), x) - interpolate_front(front(b_xy), x))[0])


def dominated_share(a_xy: NDArray[np.float64], b_xy: NDArray[np.float64]) -> float:
    """Share of A's finite end points dominated by at least one of B's (NaN: A has none)."""
    a = a_xy[np.all(np.isfinite(a_xy), axis=1)]
    b = b_xy[np.all(np.isfinite(b_xy), axis=1)]
    if len(a) == 0:
        return math.nan
    if len(b) == 0:
        return 0.0
    dominated = [bool(np.any(np.all(b <= q, axis=1) & np.any(b < q, axis=1))) for q in a]
    return float(np.mean(dominated))


@dataclass(frozen=True)
class Reference:
    """The fixed hypervolume reference point (linear units) and how it was set."""

    main: float
    aux: float
    plain_main: float
    plain_aux: float
    rule: str

    def xy(self, space: Space) -> NDArray[np.float64]:
        """The reference point in ``space``."""
        point: NDArray[np.float64] = space.transform(np.array([[self.main, self.aux]]))[0]
        return point


def swept(method: str) -> bool:
    """Whether a method label (``"bloop"``, ``"bloop@rho=0.01"``) is swept over lam: False for
    the table's methods without lam (one end point per seed, see
    :attr:`torchbloop.methods.MethodInfo.takes_lam`); True for unknown labels.

    Example:
        >>> swept("bloop@rho=0.01"), swept("metabalance"), swept("not_in_the_table")
        (True, False, True)
    """
    from torchbloop.methods import METHODS

    info = METHODS.get(method.split("@")[0])
    return info is None or info.takes_lam


def _kept(points: Sequence[EndPoint], excluded: Sequence[float]) -> list[EndPoint]:
    """``points`` without the lam values left out (methods without lam always kept)."""
    return [p for p in points if p.lam not in excluded or not swept(p.method)]


def plain_reference(points: Sequence[EndPoint], main_factor: float = MAIN_FACTOR) -> Reference:
    """``(main_factor x plain main, plain aux)`` from the ``lam = 0`` runs (Mixed's if any).

    Raises:
        ValueError: no finite ``lam = 0`` end point.
    """
    zero = [p for p in points if p.lam == 0 and math.isfinite(p.main) and math.isfinite(p.aux)]
    mixed = [p for p in zero if p.method == "mixed"]
    chosen = mixed or zero
    if not chosen:
        raise ValueError("Invalid points: no finite lam = 0 end point to set the reference from")
    main = float(np.mean([p.main for p in chosen]))
    aux = float(np.mean([p.aux for p in chosen]))
    who = "Mixed's" if mixed else "all methods'"
    return Reference(
        main_factor * main,
        aux,
        main,
        aux,
        f"({main_factor:g} x plain main, plain aux); plain = mean of {who} lam = 0 end points "
        f"({len(chosen)} runs): main {main:.4g}, aux {aux:.4g}",
    )


def degenerate_lams(points: Sequence[EndPoint]) -> list[float]:
    """Lam values where EVERY method made no progress on the main loss (or diverged).

    A method is degenerate at a lam when its seed-mean end main loss is within
    :data:`NO_PROGRESS` of its seed-mean main loss at initialisation (``start_main``) or above
    it, or not finite. Unknown starts never count. Methods without lam (single points, see
    :func:`swept`) take no part: their recorded lam is not a point of the grid.
    """
    by: dict[float, dict[str, list[EndPoint]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        if swept(p.method):
            by[p.lam][p.method].append(p)
    out = []
    for lam, methods in sorted(by.items()):
        flags = []
        for group in methods.values():
            end = float(np.mean([p.main for p in group]))
            start = float(np.mean([p.start_main for p in group]))
            stuck = math.isfinite(start) and end >= (1.0 - NO_PROGRESS) * start
            flags.append(not math.isfinite(end) or stuck)
        if all(flags):
            out.append(lam)
    return out


def collapsed(p: EndPoint) -> bool:
    """Whether one run made no progress on the main loss: its end main loss is within
    :data:`NO_PROGRESS` of its value at initialisation or above it (e.g. a network collapsed to
    chance by a too strong penalty), or not finite. Unknown starts never count.

    Such an end point is left out of its method's front for the aux gaps (not for dominance or
    hypervolume): the piecewise-linear front would otherwise run from the method's last real
    trade-off to the collapsed network and credit it with aux losses it never reached in between.
    """
    if not math.isfinite(p.main):
        return True
    return math.isfinite(p.start_main) and p.main >= (1.0 - NO_PROGRESS) * p.start_main


@dataclass(frozen=True)
class PairResult:
    """Metrics of method ``a`` against method ``b`` (see the module docstring)."""

    a: str
    b: str
    space: Space
    reference: Reference
    excluded_lams: tuple[float, ...]
    seeds: tuple[int, ...]
    gap: Spread
    """Per seed: mean ``aux_a - aux_b`` at matched main loss (negative: ``a`` better)."""
    gap_of_means: float
    """The same on the fronts of the seed-mean end points of each lam."""
    intervals: tuple[tuple[float, float] | None, ...]
    gap_near_plain: Spread
    """Per seed: ``aux_a - aux_b`` at main = :data:`NEAR_PLAIN` x plain training's."""
    a_dominated: Spread
    """Per seed: share of ``a``'s end points dominated by ``b``'s."""
    b_dominated: Spread
    hv_a: Spread
    hv_b: Spread
    extra: dict[str, Any] = field(default_factory=dict)


def _mean_points(points: Sequence[EndPoint]) -> list[EndPoint]:
    by: dict[tuple[str, float], list[EndPoint]] = defaultdict(list)
    for p in points:
        by[(p.method, p.lam)].append(p)
    return [
        EndPoint(
            m,
            lam,
            -1,
            float(np.mean([q.main for q in g])),
            float(np.mean([q.aux for q in g])),
            float(np.mean([q.start_main for q in g])),
        )
        for (m, lam), g in by.items()
    ]


def compare(
    points: Sequence[EndPoint],
    a: str,
    b: str,
    *,
    space: Space | None = None,
    reference: Reference | None = None,
) -> PairResult:
    """All metrics of ``a`` vs ``b`` over the seeds both have.

    Args:
        points: end points of (at least) both methods.
        a, b: method labels.
        space: comparison space (default: :meth:`Space.choose` over ``points``).
        reference: hypervolume reference (default: :func:`plain_reference` of ``points``).

    Raises:
        ValueError: a method has no end points.
    """
    for m in (a, b):
        if not any(p.method == m for p in points):
            raise ValueError(
                f"Invalid method {m!r}: no end points (have {sorted({p.method for p in points})})"
            )
    space = space or Space.choose(points)
    reference = reference or plain_reference(points)
    excluded = degenerate_lams(points)
    kept = _kept(points, excluded)
    seeds = sorted(
        {p.seed for p in kept if p.method == a} & {p.seed for p in kept if p.method == b}
    )
    ref_xy = reference.xy(space)
    moving = [p for p in kept if not collapsed(p)]  # the fronts the gaps interpolate
    gone = sorted({(p.method, p.lam) for p in kept if collapsed(p) and p.method in (a, b)})

    def xy(method: str, seed: int | None, pts: Sequence[EndPoint] = kept) -> NDArray[np.float64]:
        return space.xy([p for p in pts if p.method == method and (seed is None or p.seed == seed)])

    near = space.transform(np.array([[NEAR_PLAIN * reference.plain_main, 1.0]]))[0, 0]
    gaps, near_gaps, intervals, a_dom, b_dom, hv_a, hv_b = [], [], [], [], [], [], []
    for s in seeds:
        pa, pb = xy(a, s), xy(b, s)
        ga, gb = xy(a, s, moving), xy(b, s, moving)
        gaps.append(aux_gap(ga, gb))
        near_gaps.append(gap_at(ga, gb, float(near)))
        intervals.append(common_interval(ga, gb))
        a_dom.append(dominated_share(pa, pb))
        b_dom.append(dominated_share(pb, pa))
        hv_a.append(hypervolume_2d(pa, ref_xy))
        hv_b.append(hypervolume_2d(pb, ref_xy))
    means = [p for p in _mean_points(kept) if not collapsed(p)]
    return PairResult(
        a,
        b,
        space,
        reference,
        tuple(excluded),
        tuple(seeds),
        Spread(tuple(gaps)),
        aux_gap(xy(a, None, means), xy(b, None, means)),
        tuple(intervals),
        Spread(tuple(near_gaps)),
        Spread(tuple(a_dom)),
        Spread(tuple(b_dom)),
        Spread(tuple(hv_a)),
        Spread(tuple(hv_b)),
        {"collapsed": tuple(gone)},
    )


def verdict(gap: Spread, tol: float, *, n_min: int = 3) -> str:
    """Words for a gap (negative = the claimed method better) measured over seeds.

    * ``"reproduced"``: ``mean + 2 se < 0`` (lower aux at matched main beyond the seed noise)
      and every seed below 0.
    * ``"not reproduced"``: ``mean - 2 se > -tol`` and ``mean > -tol``: the gain, if any, is
      smaller than ``tol`` (a tie or worse) beyond the seed noise.
    * ``"inconclusive"``: anything else, including fewer than ``n_min`` seeds with a gap.

    Example:
        >>> verdict(Spread((-0.2, -0.25, -0.3)), tol=0.01)
        'reproduced'
        >>> verdict(Spread((0.001, -0.002, 0.0)), tol=0.01)
        'not reproduced'
        >>> verdict(Spread((-0.2, 0.1, 0.05)), tol=0.01)
        'inconclusive'
    """
    if gap.n < n_min:
        return "inconclusive"
    m, se = gap.mean, gap.se
    if m + 2 * se < 0 and gap.hi < 0:
        return "reproduced"
    if m - 2 * se > -tol and m > -tol:
        return "not reproduced"
    return "inconclusive"


def pair_table(results: Sequence[PairResult]) -> list[str]:
    """Markdown table lines: one row per pair (gap, dominance shares, hypervolumes)."""
    lines = [
        "| A vs B | seeds | aux gap A-B at matched main (per seed: mean ± se [min, max]) | "
        f"gap of seed-mean fronts | gap at main = {NEAR_PLAIN:g} x plain | "
        "A's points dominated by B | B's points dominated by A | HV A | HV B | "
        "lam left out (degenerate for all; gaps only: collapsed runs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.a} vs {r.b} | {len(r.seeds)} | {r.gap.text()} | {r.gap_of_means:.3g} | "
            f"{r.gap_near_plain.text()} | "
            f"{r.a_dominated.text(2)} | {r.b_dominated.text(2)} | {r.hv_a.text()} | "
            f"{r.hv_b.text()} | {_left_out(r)} |"
        )
    return lines


def _left_out(r: PairResult) -> str:
    """The lams left out of every metric, and the collapsed runs left out of the gaps."""
    parts = [", ".join(f"{x:g}" for x in r.excluded_lams)] if r.excluded_lams else []
    gone = r.extra.get("collapsed", ())
    if gone:
        parts.append("gaps only: " + ", ".join(f"{m} {lam:g}" for m, lam in gone))
    return "; ".join(parts) or "none"


def _style(method: str) -> tuple[str, str]:
    """``(label, colour)`` of a method label from the method table (grey when unknown)."""
    from torchbloop.methods import METHODS

    info = METHODS.get(method.split("@")[0])
    if info is None:
        return method, "tab:gray"
    suffix = method[len(info.name) :]
    return info.label + suffix, info.colour


def _near(value: float, lim: tuple[float, float], log: bool, slack: float = 0.5) -> bool:
    """Whether ``value`` lies within the axis range ``lim`` widened by ``slack`` of its span."""
    if not math.isfinite(value) or (log and value <= 0):
        return False
    lo, hi = (math.log10(v) for v in lim) if log else lim
    v = math.log10(value) if log else value
    pad = slack * (hi - lo)
    return lo - pad <= v <= hi + pad


def _plain_ticks(ax: Any, log_x: bool, log_y: bool) -> None:
    """Tick labels such as ``2.3`` instead of ``2.3 x 10^0`` on log axes (narrow ranges)."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator

    for log, axis in ((log_x, ax.xaxis), (log_y, ax.yaxis)):
        if not log:
            continue
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or hi / lo > 100:  # wide ranges: the decades are the clearest labels
            continue
        if hi / lo < 3:  # within a few percent to a factor of 3: evenly spaced values
            axis.set_major_locator(MaxNLocator(nbins=6))
            axis.set_major_formatter(FormatStrFormatter("%.4g"))
        else:
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)))
            axis.set_major_formatter(FormatStrFormatter("%.3g"))
        axis.set_minor_formatter(FormatStrFormatter(""))


def plot_fronts(
    points: Sequence[EndPoint],
    path: Path,
    *,
    title: str,
    pair: tuple[str, str] | None = None,
    reference: Reference | None = None,
    space: Space | None = None,
) -> Path:
    """End points with seed spread (mean, min-max bars) per method, and the gap curve of a pair.

    Left: each method's seed-mean end point of every lam, joined in lam order, with min-max
    error bars over the seeds in both coordinates, lam written beside Bloop's points; the
    reference point's box dashed. Right (when ``pair`` is given): ``aux_A - aux_B`` at matched
    main loss over the common interval, one thin line per seed and a thick one for the
    seed-mean fronts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = space or Space.choose(points)
    ncols = 2 if pair else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.8), squeeze=False)
    ax = axes[0][0]
    by: dict[str, dict[float, list[EndPoint]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        by[p.method][p.lam].append(p)
    for method, lams in by.items():
        label, colour = _style(method)
        rows = []
        for lam in sorted(lams):
            g = [q for q in lams[lam] if math.isfinite(q.main) and math.isfinite(q.aux)]
            if not g:
                continue
            mains, auxs = [q.main for q in g], [q.aux for q in g]
            rows.append(
                (lam, np.mean(mains), min(mains), max(mains), np.mean(auxs), min(auxs), max(auxs))
            )
        if not rows:
            continue
        arr = np.array(rows)
        ax.errorbar(
            arr[:, 1],
            arr[:, 4],
            xerr=[arr[:, 1] - arr[:, 2], arr[:, 3] - arr[:, 1]],
            yerr=[arr[:, 4] - arr[:, 5], arr[:, 6] - arr[:, 4]],
            color=colour,
            marker="o" if swept(method) else "D",  # a diamond: a method without lam
            ms=4,
            lw=1,
            capsize=2,
            label=f"{label} (n={max(len(v) for v in lams.values())} seeds)",
        )
        if method.startswith("bloop") or method == "mixed":
            for lam, x, _, _, y, _, _ in rows:
                ax.annotate(
                    f"{lam:.2g}",
                    (x, y),
                    fontsize=6,
                    color=colour,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    if space.log_main:
        ax.set_xscale("log")
    if space.log_aux:
        ax.set_yscale("log")
    if reference is not None:
        # The data stay in view: a reference line far outside them is named, not drawn.
        xlim, ylim = ax.get_xlim(), ax.get_ylim()
        off = []
        if _near(reference.main, xlim, space.log_main):
            ax.axvline(reference.main, color="k", ls="--", lw=0.8)
        else:
            off.append(f"main {reference.main:.3g}")
        if _near(reference.aux, ylim, space.log_aux):
            ax.axhline(reference.aux, color="k", ls="--", lw=0.8)
        else:
            off.append(f"aux {reference.aux:.3g}")
        label = "HV reference (2x plain main, plain aux)"
        if off:
            label += f"; off the plot: {', '.join(off)}"
        ax.plot([], [], color="k", ls="--", lw=0.8, label=label)
    _plain_ticks(ax, space.log_main, space.log_aux)
    ax.set_xlabel("main loss (end of run)")
    ax.set_ylabel("aux loss (end of run)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    if pair:
        a, b = pair
        bx = axes[0][1]
        kept = points
        if reference is not None:
            excluded = degenerate_lams(points)
            kept = _kept(points, excluded)
        seeds = sorted(
            {p.seed for p in kept if p.method == a} & {p.seed for p in kept if p.method == b}
        )
        drawn = 0
        moving = [p for p in kept if not collapsed(p)]  # as in compare(): no collapsed runs
        for s in [*seeds, None]:
            src = moving if s is not None else [q for q in _mean_points(kept) if not collapsed(q)]
            pa = space.xy([p for p in src if p.method == a and (s is None or p.seed == s)])
            pb = space.xy([p for p in src if p.method == b and (s is None or p.seed == s)])
            interval = common_interval(pa, pb)
            if interval is None:
                continue
            drawn += 1
            xs = np.linspace(*interval, GRID_POINTS)
            diff = interpolate_front(front(pa), xs) - interpolate_front(front(pb), xs)
            xplot = 10**xs if space.log_main else xs
            bx.plot(
                xplot,
                diff,
                color="k",
                lw=2.0 if s is None else 0.8,
                alpha=1.0 if s is None else 0.5,
                label="seed-mean fronts" if s is None else f"seed {s}",
                marker="o" if interval[0] == interval[1] else None,  # a single-point front
            )
        bx.axhline(0, color="gray", lw=0.8)
        if space.log_main:
            bx.set_xscale("log")
        _plain_ticks(bx, space.log_main, False)
        unit = "log10 aux" if space.log_aux else "aux"
        bx.set_xlabel("main loss (common interval of both fronts)")
        bx.set_ylabel(f"{unit}: {_style(a)[0]} - {_style(b)[0]} (< 0: {_style(a)[0]} lower)")
        bx.set_title("aux gap at matched main loss", fontsize=9)
        if drawn:
            bx.legend(fontsize=7)
        else:  # e.g. each front is one point and the two differ in main loss
            bx.text(
                0.5,
                0.5,
                "the two fronts share no main-loss interval\n(on any seed, nor their seed means)",
                ha="center",
                va="center",
                transform=bx.transAxes,
                fontsize=9,
            )
        bx.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_front_report(
    records: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    title: str,
    pairs: Sequence[tuple[str, str]] = (("bloop", "mixed"),),
) -> Path:
    """``OUT/fronts.md`` with the pair metrics per split, and ``OUT/fronts_<split>.png``.

    Returns:
        The path of ``fronts.md``.
    """
    out = Path(out_dir)
    methods = sorted({m for p in pairs for m in p})
    lines = [
        f"# {title}: front metrics with seeds",
        "",
        "Written by `torchbloop.experiments.analysis.fronts.write_front_report` from the records",
        "in `runs/` (see the module's docstring for the definitions). Gap: A's aux minus B's at",
        "matched main loss (< 0: A's front lower), per seed, then mean ± se [min, max] over seeds.",
        "",
    ]
    for split in ("train", "eval"):
        points = [p for p in end_points(records, split) if p.method.split("@")[0] in methods]
        if not any(math.isfinite(p.main) for p in points):
            continue
        results = [compare(points, a, b) for a, b in pairs]
        ref = results[0].reference
        lines += [
            f"## {split}",
            "",
            f"Space: {results[0].space.describe()}. Hypervolume reference: {ref.rule}.",
            "",
            *pair_table(results),
            "",
            f"![fronts {split}](fronts_{split}.png)",
            "",
        ]
        plot_fronts(
            points,
            out / f"fronts_{split}.png",
            title=f"{title} ({split}); bars: min-max over seeds",
            pair=pairs[0],
            reference=ref,
        )
    path = out / "fronts.md"
    path.write_text("\n".join(lines))
    return path
