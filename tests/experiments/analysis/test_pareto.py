"""Pareto tools: hand-computed values and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchbloop.experiments.analysis.pareto import (
    dominated_count,
    front,
    hypervolume_2d,
    nondominated,
    reference_point,
    to_log,
)

coords = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, width=32)
point_lists = st.lists(st.tuples(coords, coords), min_size=1, max_size=12)
REF = (11.0, 11.0)


def test_nondominated_hand_example() -> None:
    pts = [[1, 3], [2, 2], [3, 1], [2, 3], [3, 3], [1, 3]]
    assert nondominated(pts).tolist() == [True, True, True, False, False, True]


def test_nondominated_ignores_non_finite() -> None:
    assert nondominated([[np.nan, 0.0], [1.0, 1.0], [np.inf, -1.0]]).tolist() == [
        False,
        True,
        False,
    ]


def test_front_sorted_by_first_coordinate() -> None:
    f = front([[3, 1], [1, 3], [2, 2], [3, 3]])
    assert f.tolist() == [[1, 3], [2, 2], [3, 1]]


@pytest.mark.parametrize(
    ("points", "ref", "expected"),
    [
        ([[1.0, 1.0]], (3.0, 3.0), 4.0),
        ([[1.0, 2.0], [2.0, 1.0]], (3.0, 3.0), 3.0),
        ([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]], (3.0, 3.0), 6.0),
        ([[4.0, 0.0], [1.0, 1.0]], (3.0, 3.0), 4.0),  # beyond ref in x: ignored
        ([[3.0, 1.0]], (3.0, 3.0), 0.0),  # on the reference boundary: no area
        ([], (3.0, 3.0), 0.0),
    ],
)
def test_hypervolume_hand_computed(
    points: list[list[float]], ref: tuple[float, float], expected: float
) -> None:
    assert hypervolume_2d(points, ref) == pytest.approx(expected)


def test_reference_point_margin() -> None:
    ref = reference_point([[1.0, 10.0], [3.0, 20.0]], margin=0.1)
    assert ref.tolist() == pytest.approx([3.2, 21.0])
    # zero range: still strictly worse than every point
    assert reference_point([[2.0, 2.0]], margin=0.1).tolist() == pytest.approx([2.2, 2.2])


def test_dominated_count_strict() -> None:
    front_pts = [[1.0, 2.0], [2.0, 1.0]]
    others = [[1.0, 2.0], [1.5, 2.5], [3.0, 0.5], [2.0, 1.5]]
    # equal point not dominated; (1.5,2.5) by (1,2); (3,0.5) by none; (2,1.5) by (2,1)
    assert dominated_count(front_pts, others) == 2


def test_to_log_only_when_positive() -> None:
    logged, used = to_log([[1.0, 100.0], [10.0, 1000.0]])
    assert used and logged.tolist() == [[0.0, 2.0], [1.0, 3.0]]
    _, used = to_log([[0.0, 1.0]])
    assert not used


@settings(max_examples=60, deadline=None)
@given(point_lists, st.tuples(coords, coords))
def test_adding_a_dominated_point_keeps_hv(
    points: list[tuple[float, float]], shift: tuple[float, float]
) -> None:
    base = hypervolume_2d(points, REF)
    worse = (points[0][0] + shift[0] / 10, points[0][1] + shift[1] / 10)
    assert hypervolume_2d([*points, worse], REF) == pytest.approx(base, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(point_lists, st.tuples(coords, coords))
def test_hv_monotone_in_points(
    points: list[tuple[float, float]], extra: tuple[float, float]
) -> None:
    assert hypervolume_2d([*points, extra], REF) >= hypervolume_2d(points, REF) - 1e-9


@settings(max_examples=60, deadline=None)
@given(point_lists, st.randoms(use_true_random=False))
def test_nondominated_set_invariant_to_permutation(points: list[tuple[float, float]], rnd) -> None:  # type: ignore[no-untyped-def]
    perm = list(range(len(points)))
    rnd.shuffle(perm)
    shuffled = [points[i] for i in perm]
    a = {tuple(p) for p, m in zip(points, nondominated(points)) if m}
    b = {tuple(p) for p, m in zip(shuffled, nondominated(shuffled)) if m}
    assert a == b
    assert hypervolume_2d(shuffled, REF) == pytest.approx(hypervolume_2d(points, REF))


@settings(max_examples=60, deadline=None)
@given(point_lists)
def test_hv_equals_union_of_boxes_grid(points: list[tuple[float, float]]) -> None:
    """Against a brute-force area estimate on a fine grid (exact for grid-aligned points)."""
    pts = np.round(np.asarray(points) * 2) / 2  # multiples of 0.5
    ref = np.array([10.5, 10.5])
    cells = np.arange(0.0, 10.5, 0.5) + 0.25  # cell centres
    cx, cy = np.meshgrid(cells, cells, indexing="ij")
    covered = np.zeros_like(cx, dtype=bool)
    for x, y in pts:
        covered |= (cx > x) & (cy > y)
    assert hypervolume_2d(pts, ref) == pytest.approx(covered.sum() * 0.25)


@settings(max_examples=60, deadline=None)
@given(point_lists)
def test_front_points_not_dominated_by_any(points: list[tuple[float, float]]) -> None:
    f = front(points)
    assert dominated_count(points, f) == 0
    assert len(f) >= 1
