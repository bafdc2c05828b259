"""The torchbloop command line: validation before work, list, smoke runs, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchbloop.experiments.cli import main
from torchbloop.experiments.sweep.registry import BUDGETS, METHODS, names
from torchbloop.experiments.sweep.results import (
    LOSS_KEYS,
    SCHEMA_VERSION,
    read_records,
    validate_record,
)

OWN = ("projection_bias", "conditioning", "quadratic")


@pytest.mark.parametrize(
    ("args", "must_list"),
    [
        (["run", "nope"], OWN),
        (["run", "quadratic", "--methods", "bloop", "sgd"], METHODS),
        (["run", "quadratic", "--budget", "huge"], BUDGETS),
        (["run", "quadratic", "--lams", "-1"], [">= 0"]),
        (["run", "quadratic", "--lams", "nan"], ["finite"]),
        (["run", "quadratic", "--lams", "inf"], ["finite"]),
        (["run", "quadratic", "--lams", "abc"], ["invalid float"]),
        (["run", "quadratic", "--rho", "0"], ["(0, 1]"]),
        (["run", "quadratic", "--rho", "1.5"], ["(0, 1]"]),
        (["run", "quadratic", "--jobs", "0"], [">= 1"]),
        (["run", "quadratic", "--seeds", "-3"], [">= 0"]),
    ],
)
def test_invalid_arguments_exit_2_before_any_work(
    args: list[str], must_list: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for choice in must_list:
        assert choice in err
    assert not out.exists()


def test_missing_out_and_bad_report_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "quadratic"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2  # exists but holds no records
    assert main(["demo", "--jobs", "0", "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()


def test_list_prints_one_experiment_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    first_column = [line.split()[0] for line in lines]
    assert first_column == names()
    assert set(OWN) <= set(first_column)
    assert any("Fig. 2" in line for line in lines if line.startswith("projection_bias"))


def _check_records(out: Path, name: str, n: int, sweep: bool) -> list[dict]:
    records = read_records(out, name)
    assert len(records) == n
    for r in records:
        validate_record(r, require_losses=sweep)
        assert r["spec"]["budget"] == "smoke" and r["wall_time_s"] > 0
        raw = json.loads(
            (
                out / name / "runs" / f"{r['spec']['method']}_lam{_lam(r)}_rho1e-02_seed0.json"
            ).read_text()
        )
        assert raw["schema"] == SCHEMA_VERSION
    return records


def _lam(r: dict) -> str:
    from torchbloop.experiments.sweep.registry import format_float

    return format_float(r["spec"]["lam"])


def test_smoke_runs_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    assert main(["run", "projection_bias", "--budget", "smoke", "--out", str(out)]) == 0
    assert main(["run", "conditioning", "--budget", "smoke", "--out", str(out)]) == 0
    assert (
        main(
            [
                "run",
                "quadratic",
                "--budget",
                "smoke",
                "--methods",
                "bloop",
                "mixed",
                "--lams",
                "0",
                "1",
                "--jobs",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    pb = _check_records(out, "projection_bias", 1, sweep=False)
    curves = pb[0]["curves"]
    assert {"to_bloop", "to_mixed", "t"} <= set(curves)
    assert curves["to_bloop"]["y"][0] < curves["to_mixed"]["y"][0]  # small noise: close to Bloop
    assert curves["to_bloop"]["y"][-1] > curves["to_mixed"]["y"][-1]  # large noise: close to Mixed
    cond = _check_records(out, "conditioning", 8, sweep=True)
    mixed = next(r for r in cond if r["spec"]["method"] == "mixed" and r["spec"]["lam"] == 1.0)
    assert mixed["final"]["a"] == pytest.approx(
        0.5, abs=1e-6
    )  # Mixed's biased solution lam/(1+lam)
    bloop = next(r for r in cond if r["spec"]["method"] == "bloop" and r["spec"]["lam"] == 1.0)
    assert bloop["final"]["dist_to_bilevel_opt"] < 1e-6
    quad = _check_records(out, "quadratic", 4, sweep=True)
    for r in quad:
        assert set(LOSS_KEYS) | {"dist_to_bilevel_opt"} <= set(r["trajectory"])
        assert r["final"]["train_main"] < r["trajectory"]["train_main"][0]
        assert r["extra"]["optimum"]["train_main"] < 1e-6
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "README.md")
    index = (out / "README.md").read_text()
    for name in OWN:
        report = out / name / "report.md"
        assert f"{name}/report.md" in index and report.exists()
        assert (out / name / "endpoints.csv").exists()
        for line in report.read_text().splitlines():
            if line.startswith("!["):
                assert (out / name / line.split("(")[1].rstrip(")")).stat().st_size > 5000
    assert (out / "quadratic" / "pareto.png").exists() and (
        out / "conditioning" / "conditioning.png"
    ).exists()
    text = (out / "quadratic" / "report.md").read_text()
    assert "hypervolume" in text and "Bloop's front dominates" in text
    # resumable through the CLI: nothing is recomputed, records untouched
    before = {p: p.stat().st_mtime_ns for p in (out / "quadratic" / "runs").glob("*.json")}
    assert (
        main(
            [
                "run",
                "quadratic",
                "--budget",
                "smoke",
                "--methods",
                "bloop",
                "mixed",
                "--lams",
                "0",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "4 skipped" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_demo_skips_missing_experiments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchbloop.experiments import cli
    from torchbloop.experiments.sweep.registry import get

    monkeypatch.setattr(cli, "DEMO_EXPERIMENTS", ("projection_bias", "_not_registered"))
    assert get("projection_bias").demo_budget in BUDGETS
    assert main(["demo", "--out", str(tmp_path / "demo"), "--jobs", "1"]) == 0
    cap = capsys.readouterr()
    assert "'_not_registered' is not available" in cap.err
    assert str(tmp_path / "demo" / "README.md") in cap.out
    assert len(read_records(tmp_path / "demo", "projection_bias")) == 1


def test_demo_prints_the_scoreboard_test_and_the_committed_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The demo's summary of an experiment ends with the scoreboard's test (Bloop vs Mixed at
    matched main loss) on its own records and the committed scoreboard rows of that claim."""
    from torchbloop.experiments import cli

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # the scoreboard is read from a repository checkout
    lines = cli._demo_table(root / "docs" / "results", "quadratic")
    text = "\n".join(lines)
    start = text.index("the scoreboard's test on this run")
    assert "train: gap " in text[start:] and "inconclusive (1 seed)" in text[start:]
    committed = [line.strip() for line in lines if line.strip().startswith(("3a ", "3b "))]
    assert len(committed) == 2
    assert all("(n=3)" in line and ": reproduced (" in line for line in committed)


def test_demo_without_a_checkout_prints_only_its_own_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchbloop.experiments import cli

    results = Path(__file__).resolve().parents[2] / "docs" / "results"
    monkeypatch.chdir(tmp_path)  # no docs/results/scoreboard.md here
    text = "\n".join(cli._demo_table(results, "smooth_mlp"))
    assert "the scoreboard's test on this run" in text
    assert "the same claim in" not in text
