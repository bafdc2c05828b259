"""Front metrics on constructed fronts with known answers, and the regime study's batched runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchbloop.experiments.analysis import fronts as F
from torchbloop.experiments.analysis.scoreboard import Claim, scoreboard_table
from torchbloop.experiments.sweep.registry import RunSpec
from torchbloop.experiments.tasks import quadratic, regime

LINEAR = F.Space(log_main=False, log_aux=False)


def pts(method: str, seed: int, rows: list[tuple[float, float, float]]) -> list[F.EndPoint]:
    return [F.EndPoint(method, lam, seed, m, a) for lam, m, a in rows]


def test_interpolate_front_inside_and_outside() -> None:
    f = np.array([[1.0, 4.0], [3.0, 0.0]])
    out = F.interpolate_front(f, np.array([0.5, 1.0, 2.0, 3.0, 3.5]))
    assert np.isnan(out[0]) and np.isnan(out[-1])
    assert out[1:4].tolist() == [4.0, 2.0, 0.0]


def test_aux_gap_shifted_front_is_the_shift() -> None:
    b = LINEAR.xy(pts("b", 0, [(0.1, 1.0, 5.0), (1.0, 2.0, 3.0), (10.0, 4.0, 1.0)]))
    a = b + np.array([0.0, -0.5])
    assert F.aux_gap(a, b) == pytest.approx(-0.5)
    assert F.aux_gap(b, a) == pytest.approx(0.5)


def test_aux_gap_uses_only_the_common_interval() -> None:
    # A spans main [1, 3] with aux 2 - (m - 1) / 2; B spans [2, 5] with aux 1 everywhere.
    a = np.array([[1.0, 2.0], [3.0, 1.0]])
    b = np.array([[2.0, 1.0], [5.0, 0.999]])
    assert F.common_interval(a, b) == (2.0, 3.0)
    # On [2, 3]: A goes 1.5 -> 1.0 (mean 1.25), B 1.0 -> 0.999667 (mean ~0.99983).
    expected = 1.25 - np.mean(np.interp(np.linspace(2, 3, F.GRID_POINTS), b[:, 0], b[:, 1]))
    assert F.aux_gap(a, b) == pytest.approx(expected)


def test_aux_gap_no_overlap_is_nan() -> None:
    a = np.array([[1.0, 2.0], [2.0, 1.0]])
    b = np.array([[3.0, 0.5], [4.0, 0.1]])
    assert F.common_interval(a, b) is None
    assert math.isnan(F.aux_gap(a, b))


def test_aux_gap_ignores_dominated_points() -> None:
    b = np.array([[1.0, 3.0], [3.0, 1.0]])
    a = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 9.0]])  # (2, 9) is dominated: not on A's front
    assert F.aux_gap(a, b) == pytest.approx(-1.0)


def test_single_point_front_is_compared_at_its_main_loss() -> None:
    """A method without lam has one end point per seed: its gap is the difference at its own
    main loss, when the other front spans it; touching multi-point fronts still do not count."""
    b = np.array([[1.0, 3.0], [3.0, 1.0]])
    point = np.array([[1.5, 2.0]])  # B's front at main 1.5: aux 2.5
    assert F.common_interval(point, b) == (1.5, 1.5)
    assert F.aux_gap(point, b) == pytest.approx(-0.5)
    assert F.aux_gap(b, point) == pytest.approx(0.5)
    assert math.isnan(F.aux_gap(np.array([[3.5, 0.1]]), b))  # outside B's span
    assert F.common_interval(np.array([[3.0, 1.0], [4.0, 0.5]]), b) is None  # touching fronts


def test_methods_without_lam_are_never_left_out_as_degenerate() -> None:
    from torchbloop.methods import FIXED_LAM

    def p(method: str, lam: float, main: float, aux: float, seed: int = 0) -> F.EndPoint:
        return F.EndPoint(method, lam, seed, main, aux, start_main=2.3)

    points = [
        p("mixed", 0.0, 1.0, 4.0),
        p("mixed", 0.1, 1.2, 2.0),
        p("mixed", FIXED_LAM, 2.3, 0.01),
        p("bloop", 0.0, 1.0, 4.0),
        p("bloop", 0.1, 1.1, 2.5),
        p("bloop", FIXED_LAM, 2.4, 0.1),
        p("metabalance", FIXED_LAM, 1.1, 3.0),  # progress, but not a point of the lam grid
    ]
    assert F.degenerate_lams(points) == [FIXED_LAM]  # bloop and mixed stuck at lam = 1
    assert not F.swept("metabalance") and F.swept("bloop@rho=0.1") and F.swept("unknown")
    r = F.compare(points, "metabalance", "mixed", space=LINEAR)
    assert r.excluded_lams == (FIXED_LAM,)
    # metabalance's point kept, compared at main 1.1 on Mixed's front (1, 4)-(1.2, 2): aux 3
    assert list(r.gap.values) == pytest.approx([0.0])
    r = F.compare(points, "metabalance", "bloop", space=LINEAR)
    assert list(r.gap.values) == pytest.approx([3.0 - 2.5])


def test_dominated_share_counts() -> None:
    a = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 0.5], [np.nan, 1.0]])
    b = np.array([[1.5, 1.5]])
    assert F.dominated_share(a, b) == pytest.approx(1 / 3)  # only (2, 2); NaN point ignored
    assert F.dominated_share(b, a) == 1.0
    assert F.dominated_share(b, b) == 0.0  # equal points do not dominate
    assert math.isnan(F.dominated_share(np.empty((0, 2)), b))


def test_plain_reference_and_hypervolume_fixed_box() -> None:
    points = pts("mixed", 0, [(0.0, 1.0, 4.0), (1.0, 1.5, 3.0)]) + pts(
        "bloop", 0, [(0.0, 1.0, 4.0), (1.0, 1.5, 1.0)]
    )
    ref = F.plain_reference(points)
    assert (ref.main, ref.aux) == (2.0, 4.0)
    r = F.compare(points, "bloop", "mixed", space=LINEAR, reference=ref)
    # Bloop: (1.5, 1) dominates (2 - 1.5) x (4 - 1) = 1.5, plus (1, 4) on the aux edge: 0.
    assert r.hv_a.mean == pytest.approx(1.5)
    assert r.hv_b.mean == pytest.approx(0.5)
    assert r.b_dominated.mean == pytest.approx(0.5)  # Mixed's (1.5, 3) under Bloop's (1.5, 1)
    assert r.a_dominated.mean == 0.0


def test_plain_reference_needs_lam_zero() -> None:
    with pytest.raises(ValueError, match="lam = 0"):
        F.plain_reference(pts("bloop", 0, [(1.0, 1.0, 1.0)]))


def test_degenerate_lams_only_when_every_method_is() -> None:
    def p(method: str, lam: float, main: float, aux: float) -> F.EndPoint:
        return F.EndPoint(method, lam, 0, main, aux, start_main=2.3)

    points = [
        p("mixed", 0.0, 1.0, 4.0),
        p("mixed", 1.0, 2.3, 0.01),
        p("mixed", 10.0, 2.31, 0.001),
        p("bloop", 0.0, 1.0, 4.0),
        p("bloop", 1.0, 1.2, 1.0),
        p("bloop", 10.0, 2.5, 0.1),
    ]  # lam = 1: only Mixed made no progress; lam = 10: neither did
    assert F.degenerate_lams(points) == [10.0]
    r = F.compare(points, "bloop", "mixed", space=LINEAR, reference=F.plain_reference(points))
    assert r.excluded_lams == (10.0,)
    unknown = [F.EndPoint(q.method, q.lam, 0, q.main, q.aux) for q in points]
    assert F.degenerate_lams(unknown) == []  # no start known: nothing is degenerate


def test_compare_over_seeds_gives_the_per_seed_gaps() -> None:
    points: list[F.EndPoint] = []
    for seed, shift in enumerate((-0.1, -0.2, -0.3)):
        base = [(0.0, 1.0, 8.0), (0.1, 1.2, 4.0), (1.0, 1.6, 2.0)]
        points += pts("mixed", seed, base)
        points += pts("bloop", seed, [(lam, m, a * 10**shift) for lam, m, a in base])
    r = F.compare(points, "bloop", "mixed")
    assert r.space == F.Space(log_main=True, log_aux=True)
    assert list(r.gap.values) == pytest.approx([-0.1, -0.2, -0.3])
    assert r.gap.mean == pytest.approx(-0.2)
    assert r.gap.se == pytest.approx(0.1 / math.sqrt(3))
    assert (r.gap.lo, r.gap.hi) == pytest.approx((-0.3, -0.1))
    assert F.verdict(r.gap, tol=0.01) == "reproduced"
    assert F.verdict(F.compare(points, "mixed", "bloop").gap, tol=0.01) == "not reproduced"


def test_verdict_needs_three_seeds() -> None:
    assert F.verdict(F.Spread((-1.0, -1.1)), tol=0.01) == "inconclusive"


def test_space_choose_linear_for_negative_aux() -> None:
    assert F.Space.choose(pts("a", 0, [(0.0, 1.0, -0.5), (1.0, 2.0, 1.0)])) == F.Space(
        log_main=True, log_aux=False
    )


def test_plot_fronts_writes_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    points = pts("mixed", 0, [(0.0, 1.0, 4.0), (1.0, 1.5, 3.0)]) + pts(
        "bloop", 0, [(0.0, 1.0, 4.0), (1.0, 1.5, 1.0)]
    )
    out = F.plot_fronts(
        points,
        tmp_path / "f.png",
        title="t",
        pair=("bloop", "mixed"),
        reference=F.plain_reference(points),
    )
    assert out.stat().st_size > 1000


def test_scoreboard_table_rows() -> None:
    claims = [Claim("4a", "smooth net, train", "gap", "-0.1 ± 0.01", "reproduced", "20 epochs")]
    lines = scoreboard_table(claims)
    assert lines[0].startswith("| #")
    assert "reproduced" in lines[-1] and "4a" in lines[-1]


@pytest.mark.parametrize("method", ["bloop", "mixed"])
def test_regime_row_reproduces_the_library(method: str) -> None:
    """A batched row is the library's surgeon driven by the quadratic task (same batches)."""
    steps, lam, rho, seed = 120, 2.0, 0.1, 3
    rec = quadratic.run(RunSpec("quadratic", method, lam, rho, seed, "smoke"), steps=steps)
    (row,) = regime.train_rows(
        regime.quadratic_problem(seed),
        [regime.Row(method, lam, quadratic.LR, rho)],
        batch=quadratic.BATCH,
        steps=steps,
        seed=seed,
        schedule="constant",
    )
    assert row["main"] == pytest.approx(rec["final"]["train_main"], rel=1e-10)
    assert row["dist_to_opt"] == pytest.approx(rec["final"]["dist_to_bilevel_opt"], rel=1e-10)


def test_regime_leak_is_zero_when_the_ema_is_the_main_gradient() -> None:
    """With e = g_main, pi(g_aux; e) is orthogonal to g_main: Bloop's leak is 0, Mixed's is not."""
    import torch

    prob = regime.quadratic_problem(0)
    theta = torch.randn(
        2, prob.X.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    g_main = (theta @ prob.X.T - prob.y) @ prob.X / len(prob.y)
    lam = torch.tensor([3.0, 3.0], dtype=torch.float64)
    d = regime.leak_diagnostics(prob, theta, g_main, lam, torch.tensor([True, False]))
    g_aux = theta[1] - prob.theta_star
    mixed_leak = 3.0 * float(g_aux @ g_main[1]) / float(g_main[1] @ g_main[1])
    assert abs(float(d["leak"][0])) < 1e-12 * abs(mixed_leak)
    assert float(d["leak"][1]) == pytest.approx(mixed_leak, rel=1e-12)
    assert d["cos_main_ema"].tolist() == pytest.approx([1.0, 1.0])


def test_regime_rejects_bad_rows() -> None:
    prob = regime.quadratic_problem(0)
    with pytest.raises(ValueError, match="methods"):
        regime.train_rows(prob, [regime.Row("pcgrad", 1.0, 1e-3)], batch=None, steps=1, seed=0)
    with pytest.raises(ValueError, match="schedule"):
        regime.train_rows(
            prob, [regime.Row("mixed", 1.0, 1e-3)], batch=None, steps=1, seed=0, schedule="step"
        )


def test_versus_words() -> None:
    from torchbloop.experiments.analysis.scoreboard import versus

    assert versus(F.Spread((-0.2, -0.3, -0.25)), tol=0.01) == "better than Bloop"
    assert versus(F.Spread((0.2, 0.3, 0.25)), tol=0.01) == "worse than Bloop"
    assert versus(F.Spread((0.001, -0.001, 0.0)), tol=0.01) == "tie"
    assert versus(F.Spread((-0.2, 0.3, 0.05)), tol=0.01) == "unclear"
    assert versus(F.Spread((-0.2, -0.3)), tol=0.01) == "unclear (2 seeds)"
    assert versus(F.Spread((math.nan,) * 3), tol=0.01) == "no overlap in main loss"


def test_comparison_table_from_records(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A row per method from comparison/<experiment> records: gap vs Bloop and its words."""
    from torchbloop.experiments.analysis.scoreboard import comparison_table, write
    from torchbloop.experiments.sweep.results import complete_record, write_record
    from torchbloop.methods import FIXED_LAM

    rows = {  # (lam, main, aux) per method; A-GEM 0.1 lower in log10 aux than Bloop everywhere
        "mixed": [(0.0, 1.0, 8.0)],
        "bloop": [(0.1, 1.2, 4.0), (1.0, 1.6, 2.0)],
        "agem": [(0.1, 1.2, 4.0 * 10**-0.1), (1.0, 1.6, 2.0 * 10**-0.1)],
        "metabalance": [(FIXED_LAM, 1.2, 4.0 * 10**0.2)],  # Bloop's front at main 1.2: aux 4
    }
    out = tmp_path / "results"
    for seed in range(3):
        for method, pts_ in rows.items():
            for lam, main, aux in pts_:
                jitter = 1 + 0.01 * seed
                final = {"train_main": main, "train_aux": aux * jitter}
                final |= {"eval_main": main, "eval_aux": aux * jitter}
                final["dist_to_bilevel_opt"] = (1.0 if method == "bloop" else 2.0) + lam + seed
                spec = RunSpec("quadratic", method, lam, 0.01, seed, "smoke")
                write_record(out / "comparison", complete_record(spec, {"final": final}, 0.0))
    lines = comparison_table(out)
    assert lines[0] == (
        "| method | quadratic (train) | quadratic: closest end point to the bilevel optimum |"
    )
    by = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert set(by) == {"Mixed", "A-GEM", "MetaBalance (no lam: one point)"}
    assert "-0.1 ± " in by["A-GEM"] and "**better than Bloop**" in by["A-GEM"]
    assert "**worse than Bloop**" in by["MetaBalance (no lam: one point)"]
    assert "| 0.2 ± " in by["MetaBalance (no lam: one point)"]
    assert "n/a" in by["Mixed"] and "**no overlap in main loss**" in by["Mixed"]  # off the front
    # closest distance over lam: Bloop 1.1 + seed, A-GEM 2.1 + seed: 1 farther on every seed
    assert "| 3.1 (1 ± " in by["A-GEM"] and "[1, 1] (n=3) vs Bloop): **worse than" in by["A-GEM"]
    assert "| 3 (0.9 ± " in by["Mixed"] and "[0.9, 0.9] (n=3) vs Bloop): **worse" in by["Mixed"]
    write(out)
    page = (out / "scoreboard.md").read_text()
    assert "\n## The other methods against Bloop" in page and "\n### " not in page
    assert "### The other methods against Bloop" in (out / "README.md").read_text()


def _ema_records(
    losses: dict[str, tuple[float, float]], seeds: int = 3, jitter: float = 1e-3
) -> list[dict[str, object]]:
    """EMA-ablation records: per setting ("mixed" or a rho) eval (main, aux), a small per-seed
    multiplicative jitter shared by every setting of a seed (paired seeds)."""
    out: list[dict[str, object]] = []
    for seed in range(seeds):
        f = 1 + jitter * (seed - 1)
        for key, (main, aux) in losses.items():
            method, rho = ("mixed", 0.001) if key == "mixed" else ("bloop", float(key))
            spec = {"experiment": "ema_ablation", "method": method, "lam": 0.2, "rho": rho}
            out.append(
                {
                    "spec": {**spec, "seed": seed, "budget": "default"},
                    "config": {"steps": 1200},
                    "final": {
                        "eval_main": main * f,
                        "eval_aux": aux * f * (1 + 0.3 * jitter * seed),
                    },
                }
            )
    return out


def _ema_verdicts(losses: dict[str, tuple[float, float]], seeds: int = 3) -> dict[str, str]:
    from torchbloop.experiments.analysis.scoreboard import ema_ablation_claims

    return {c.id: c.verdict for c in ema_ablation_claims(_ema_records(losses, seeds), "r.md")}


def test_ema_ablation_claims_as_the_paper_says() -> None:
    # rho 0.9 at Mixed's point; 0.001 worse on both than Mixed; 0.01 -> 0.1 trades main for aux.
    v = _ema_verdicts(
        {
            "mixed": (1.80, 2.05),
            "0.9": (1.801, 2.049),
            "0.001": (1.95, 2.20),
            "0.01": (1.70, 2.15),
            "0.1": (1.78, 2.08),
        }
    )
    assert v == {"9a": "reproduced", "9b": "reproduced", "9c": "reproduced"}


def test_ema_ablation_claims_against_the_paper() -> None:
    # rho 0.9 far from Mixed; 0.001 has the lowest main loss of all (no setting dominates it);
    # 0.1 is better than 0.01 on both losses (no trade-off).
    v = _ema_verdicts(
        {
            "mixed": (1.80, 2.05),
            "0.9": (1.60, 2.05),
            "0.001": (1.55, 2.30),
            "0.01": (1.75, 2.15),
            "0.1": (1.65, 2.00),
        }
    )
    assert v == {"9a": "not reproduced", "9b": "not reproduced", "9c": "not reproduced"}


def test_ema_ablation_claims_need_three_seeds() -> None:
    losses = {
        "mixed": (1.8, 2.05),
        "0.9": (1.8, 2.05),
        "0.001": (2.0, 2.3),
        "0.01": (1.7, 2.1),
        "0.1": (1.8, 2.0),
    }
    v = _ema_verdicts(losses, seeds=2)
    assert all(x == "inconclusive (2 seeds)" for x in v.values()), v


def test_reference_lines_far_outside_the_data_are_named_not_drawn() -> None:
    from torchbloop.experiments.analysis.fronts import _near

    assert _near(2.5, (2.3, 2.6), log=True)
    assert _near(2.7, (2.3, 2.6), log=False)  # within half the span beyond the edge
    assert not _near(4.77, (2.3, 2.6), log=True)  # the joint LM's 2 x plain main loss
    assert not _near(-1.0, (0.1, 1.0), log=True) and not _near(math.nan, (0.0, 1.0), log=False)


def test_a_collapsed_run_does_not_stretch_its_front_for_the_gap() -> None:
    # b's strongest lam collapsed the network (end main = start main = 5): its front must not be
    # interpolated from (1, 4) towards (5, -100), which would credit b with aux -22 at main 2.
    start = 5.0
    a = [
        F.EndPoint("a", lam, s, m, x, start)
        for s in range(3)
        for lam, m, x in [(0.0, 1.0, 5.0), (0.1, 1.0, 3.0), (1.0, 2.0, 1.0)]
    ]
    b = [
        F.EndPoint("b", lam, s, m, x, start)
        for s in range(3)
        for lam, m, x in [(0.0, 1.0, 5.0), (0.1, 1.0, 4.0), (1.0, 5.0, -100.0)]
    ]
    r = F.compare(a + b, "a", "b", space=LINEAR)
    assert r.gap.values == (-1.0, -1.0, -1.0)  # b's front is its one real point, at main 1
    assert r.extra["collapsed"] == (("b", 1.0),)
    assert r.excluded_lams == ()  # a progressed at lam 1: not degenerate for every method
    assert r.b_dominated.mean == 2 / 3  # dominance still counts the collapsed run
    assert F.collapsed(F.EndPoint("b", 1.0, 0, 4.96, 0.0, start))
    assert not F.collapsed(F.EndPoint("b", 1.0, 0, 4.94, 0.0, start))
    assert not F.collapsed(F.EndPoint("b", 1.0, 0, 9.0, 0.0))  # unknown start
