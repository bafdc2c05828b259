"""Pareto tools for two minimised objectives (main loss, aux loss). Pure numpy.

Conventions: a point ``p`` *dominates* ``q`` when ``p <= q`` in both coordinates and
``p < q`` in at least one (so equal points do not dominate each other). Points with a
coordinate that is not finite are ignored everywhere.

Reference point (:func:`reference_point`): one per experiment and split (train or eval),
shared by all methods: the worst coordinate over ALL methods' end points plus ``margin``
times that coordinate's range. Reports compute it, and the hypervolume, in log10 space when
every end point is positive (losses that span orders of magnitude), else in linear space;
the space used is written in the report.

Example:
    >>> hypervolume_2d([[1.0, 2.0], [2.0, 1.0]], ref=(3.0, 3.0))
    3.0
    >>> nondominated([[1, 2], [2, 1], [2, 2]]).tolist()
    [True, True, False]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _as_points(points: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"Invalid points with shape {arr.shape}: must be (n, 2)")
    return arr


def nondominated(points: ArrayLike) -> NDArray[np.bool_]:
    """Mask of the points that no other point dominates (non-finite points: False).

    Duplicates of a non-dominated point are all kept.
    """
    pts = _as_points(points)
    finite = np.all(np.isfinite(pts), axis=1)
    mask = finite.copy()
    fin = pts[finite]
    for i in np.flatnonzero(finite):
        p = pts[i]
        dominated = np.all(fin <= p, axis=1) & np.any(fin < p, axis=1)
        mask[i] = not dominated.any()
    return np.asarray(mask, dtype=bool)


def front(points: ArrayLike) -> NDArray[np.float64]:
    """The non-dominated points sorted by the first coordinate (ties: second)."""
    pts = _as_points(points)
    f = pts[nondominated(pts)]
    return f[np.lexsort((f[:, 1], f[:, 0]))]


def hypervolume_2d(points: ArrayLike, ref: ArrayLike) -> float:
    """Area dominated by ``points`` and bounded by ``ref`` (both coordinates minimised).

    Points not strictly better than ``ref`` in both coordinates contribute nothing.
    """
    pts = _as_points(points)
    r = np.asarray(ref, dtype=np.float64)
    if pts.shape[0] == 0:
        return 0.0
    pts = pts[np.all(np.isfinite(pts), axis=1) & np.all(pts < r, axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    f = front(pts)
    area = 0.0
    y_prev = r[1]
    for x, y in f:
        if y < y_prev:
            area += (r[0] - x) * (y_prev - y)
            y_prev = y
    return float(area)


def reference_point(all_points: ArrayLike, margin: float = 0.1) -> NDArray[np.float64]:
    """Worst coordinates over ``all_points`` plus ``margin`` times each coordinate's range.

    When a coordinate's range is zero, ``margin * max(|worst|, 1)`` is added instead, so the
    reference is always strictly worse than every point.
    """
    pts = _as_points(all_points)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if pts.shape[0] == 0:
        raise ValueError("Invalid all_points: need at least one finite point")
    worst, best = pts.max(axis=0), pts.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.maximum(np.abs(worst), 1.0))
    return np.asarray(worst + margin * span, dtype=np.float64)


def dominated_count(front_points: ArrayLike, other_points: ArrayLike) -> int:
    """How many of ``other_points`` are dominated by at least one of ``front_points``."""
    fp = _as_points(front_points)
    fp = fp[np.all(np.isfinite(fp), axis=1)]
    count = 0
    for q in _as_points(other_points):
        if not np.all(np.isfinite(q)):
            continue
        if np.any(np.all(fp <= q, axis=1) & np.any(fp < q, axis=1)):
            count += 1
    return count


def to_log(points: ArrayLike) -> tuple[NDArray[np.float64], bool]:
    """``(log10(points), True)`` when every finite coordinate is positive, else ``(points, False)``."""
    pts = _as_points(points)
    fin = pts[np.all(np.isfinite(pts), axis=1)]
    if fin.size and np.all(fin > 0):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(pts), True
    return pts, False
