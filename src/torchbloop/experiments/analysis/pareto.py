"""Pareto tools for two or more minimised objectives (main loss, aux loss(es)). Pure numpy.

Conventions: points are rows of an ``(n, d)`` array, one column per objective. A point ``p``
*dominates* ``q`` when ``p <= q`` in every coordinate and ``p < q`` in at least one (so equal
points do not dominate each other). Points with a coordinate that is not finite are ignored
everywhere. :func:`hypervolume` is exact in any dimension (slicing along the last objective
down to the 2-D sweep; fine for the tens of end points of a sweep).

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
    >>> hypervolume([[1.0, 1.0, 1.0]], ref=(2.0, 3.0, 4.0))
    6.0
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _as_points(points: ArrayLike, dim: int | None = None) -> NDArray[np.float64]:
    """``points`` as an ``(n, d)`` float64 array (``d`` = ``dim`` when given, else any >= 1)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, dim if dim is not None else (arr.shape[-1] if arr.ndim == 2 else 2))
    if arr.ndim != 2 or arr.shape[1] < 1 or (dim is not None and arr.shape[1] != dim):
        need = f"(n, {dim})" if dim is not None else "(n, d) with d >= 1"
        raise ValueError(f"Invalid points with shape {arr.shape}: must be {need}")
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
    """The non-dominated points sorted by the first coordinate (ties: the next ones)."""
    pts = _as_points(points)
    f = pts[nondominated(pts)]
    return f[np.lexsort(f.T[::-1])] if len(f) else f


def hypervolume_2d(points: ArrayLike, ref: ArrayLike) -> float:
    """Area dominated by ``points`` and bounded by ``ref`` (both coordinates minimised).

    Points not strictly better than ``ref`` in both coordinates contribute nothing.
    """
    pts = _as_points(points, 2)
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


def hypervolume(points: ArrayLike, ref: ArrayLike) -> float:
    """Exact volume dominated by ``points`` and bounded by ``ref``, in any dimension ``d``.

    Points not strictly better than ``ref`` in every coordinate contribute nothing. Slices the
    region along the last coordinate: between consecutive values ``z_i < z_{i+1}`` of it, the
    cross-section is the ``(d-1)``-dimensional hypervolume of the points with ``z <= z_i``.

    Raises:
        ValueError: ``ref`` does not have one coordinate per objective.

    Example:
        >>> hypervolume([[1.0, 2.0, 1.0], [2.0, 1.0, 2.0]], ref=(3.0, 3.0, 3.0))  # 4 + 2 - 1
        5.0
    """
    pts = _as_points(points)
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    if pts.shape[0] and r.shape[0] != pts.shape[1]:
        raise ValueError(f"Invalid ref with {r.shape[0]} coordinates: points have {pts.shape[1]}")
    if pts.shape[0] == 0:
        return 0.0
    pts = pts[np.all(np.isfinite(pts), axis=1) & np.all(pts < r, axis=1)]
    return _hv(pts[nondominated(pts)], r) if pts.shape[0] else 0.0


def _hv(pts: NDArray[np.float64], r: NDArray[np.float64]) -> float:
    """Hypervolume of points that are finite and strictly inside ``ref`` (recursive slicing)."""
    d = pts.shape[1]
    if d == 1:
        return float(r[0] - pts[:, 0].min())
    if d == 2:
        return hypervolume_2d(pts, r)
    z = pts[:, -1]
    levels = np.unique(z)
    bounds = np.append(levels[1:], r[-1])
    volume = 0.0
    for level, upper in zip(levels, bounds):
        below = pts[z <= level, :-1]
        volume += _hv(below[nondominated(below)], r[:-1]) * float(upper - level)
    return volume


def hypervolume_3d(points: ArrayLike, ref: ArrayLike) -> float:
    """:func:`hypervolume` of three objectives (checks that there are three).

    Example:
        >>> hypervolume_3d([[0.0, 0.0, 0.0]], ref=(1.0, 2.0, 3.0))
        6.0
    """
    return hypervolume(_as_points(points, 3), ref)


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
