"""A method added to the table is usable in the experiments with no other change."""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch

import torchbloop
from torchbloop import methods as method_table
from torchbloop.experiments.analysis.groups import group_records, method_colour
from torchbloop.experiments.cli import main
from torchbloop.experiments.sweep.results import LOSS_KEYS, read_records
from torchbloop.methods import MethodInfo


def _half_mixed(params: Any, *, lam: float) -> torchbloop.Mixed:
    """A new 'method': Mixed at half the weight (so its runs can be checked against Mixed's)."""
    return torchbloop.Mixed(params, lam=lam / 2)


@pytest.fixture
def half_mixed(monkeypatch: pytest.MonkeyPatch) -> MethodInfo:
    info = MethodInfo(
        name="half_mixed",
        label="Half Mixed",
        colour="tab:olive",
        factory=_half_mixed,
        hyperparameters=("lam",),
        description="Mixed at lam / 2 (test entry)",
    )
    table = {**method_table.METHODS, info.name: info}
    monkeypatch.setattr(method_table, "METHODS", MappingProxyType(table))
    return info


def test_new_table_entry_runs_through_the_cli_and_the_report(
    half_mixed: MethodInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    run = ["run", "conditioning", "--budget", "smoke", "--methods", "half_mixed", "mixed"]
    assert main([*run, "--lams", "0.5", "1", "--rho", "0.1", "0.2", "--out", str(out)]) == 0
    records = read_records(out, "conditioning")
    assert len(records) == 4  # no rho in the entry: one run per lam, as for Mixed
    by = {
        (r["spec"]["method"], r["spec"]["lam"]): [r["final"][k] for k in LOSS_KEYS] for r in records
    }
    # the factory of the table was used: half_mixed at lam = 1 is Mixed at lam = 0.5
    assert by[("half_mixed", 1.0)] == by[("mixed", 0.5)]
    assert by[("half_mixed", 0.5)] != by[("mixed", 0.5)]
    assert list(group_records(records)) == ["Mixed", "Half Mixed"]  # table order, table label
    assert method_colour("half_mixed") == "tab:olive"
    assert main(["report", str(out)]) == 0
    text = (out / "conditioning" / "report.md").read_text()
    assert "| Half Mixed | 1e+00 | 0 |" in text  # the key-values table, labelled from the table
    assert "4 run(s): methods Mixed, Half Mixed; lam in {5e-01, 1e+00}" in text
    capsys.readouterr()
    assert main(["run", "--help"]) == 0
    assert "half_mixed (Half Mixed)" in " ".join(capsys.readouterr().out.split())


def test_unknown_method_is_rejected_with_the_table_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "quadratic", "--methods", "half_mixed", "--out", str(tmp_path / "o")]) == 2
    assert "valid methods are bloop, mixed, pcgrad, dynamic_barrier" in capsys.readouterr().err


def test_make_surgeon_passes_only_the_declared_hyperparameters(half_mixed: MethodInfo) -> None:
    from torchbloop.experiments.sweep.methods import make_surgeon

    w = torch.nn.Parameter(torch.ones(3))
    surgeon = make_surgeon("half_mixed", [w], 0.8, rho=0.5)  # rho dropped: not in the entry
    assert isinstance(surgeon, torchbloop.Mixed) and surgeon.lam == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at most 1 aux loss"):
        make_surgeon("pcgrad", [w], [0.1, 0.2], rho=0.5)


def test_expand_runs_a_method_without_lam_once_per_seed() -> None:
    """MetaBalance and the original barrier have no lam: one run per seed, recorded at
    FIXED_LAM, whatever the grid (a lam sweep of them would repeat the same run)."""
    from torchbloop.experiments.sweep.runner import expand

    lams = [0.0, 0.1, 10.0]
    specs = expand(
        "_x",
        ["metabalance", "original_dynamic_barrier", "agem"],
        lams,
        [0.01, 0.1],
        [0, 1],
        "smoke",
    )
    for method in ("metabalance", "original_dynamic_barrier"):
        mine = [s for s in specs if s.method == method]
        assert [(s.lam, s.seed) for s in mine] == [
            (method_table.FIXED_LAM, 0),
            (method_table.FIXED_LAM, 1),
        ]
    assert len([s for s in specs if s.method == "agem"]) == len(lams) * 2
    assert [m for m, i in method_table.METHODS.items() if not i.takes_lam] == [
        "metabalance",
        "original_dynamic_barrier",
    ]


def test_every_table_method_runs_through_the_cli(tmp_path: Path) -> None:
    """All methods of the table with ``--methods`` on a smoke budget, and the report."""
    out = tmp_path / "res"
    names = list(method_table.METHODS)
    run = ["run", "conditioning", "--budget", "smoke", "--methods", *names, "--lams", "0.5", "2"]
    assert main([*run, "--seeds", "0", "--out", str(out)]) == 0
    records = read_records(out, "conditioning")
    runs: dict[str, list[float]] = {}
    for r in records:
        runs.setdefault(r["spec"]["method"], []).append(r["spec"]["lam"])
    assert set(runs) == set(names)
    for name, info in method_table.METHODS.items():
        assert sorted(runs[name]) == ([0.5, 2.0] if info.takes_lam else [method_table.FIXED_LAM])
    finals = {(r["spec"]["method"], r["spec"]["lam"]): r["final"]["train_main"] for r in records}
    assert all(math.isfinite(v) for v in finals.values())  # every run ended finite
    assert main(["report", str(out)]) == 0
    text = (out / "conditioning" / "report.md").read_text()
    for info in method_table.METHODS.values():
        assert f"| {info.label} |" in text
