"""Records on disk, resumable sweeps, failure handling, the generic train loop."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from torchbloop.experiments.sweep import registry
from torchbloop.experiments.sweep.registry import Experiment, RunSpec, format_float, register
from torchbloop.experiments.sweep.results import (
    complete_record,
    is_done,
    read_records,
    run_path,
    validate_record,
    write_record,
)
from torchbloop.experiments.sweep.runner import expand, run_sweep
from torchbloop.experiments.sweep.training import cosine_with_warmup, eval_steps, train

CALLS: list[RunSpec] = []


def _fake_run(spec: RunSpec) -> dict[str, Any]:
    CALLS.append(spec)
    if spec.lam == 13.0:
        raise RuntimeError("boom")
    v = 1.0 / (1.0 + spec.lam)
    losses = {"train_main": 1 - v, "train_aux": v, "eval_main": 1 - v, "eval_aux": v}
    return {
        "config": {"k": 1},
        "trajectory": {"step": [0, 1], **{k: [1.0, x] for k, x in losses.items()}},
        "final": {**losses, "weird": math.nan},
    }


@pytest.fixture
def fake() -> Experiment:
    CALLS.clear()
    exp = register(
        Experiment(
            name="_fake",
            title="fake",
            paper_ref="-",
            kind="sweep",
            run=_fake_run,
            methods=("bloop", "mixed"),
            lams={"smoke": (0.0, 1.0)},
        )
    )
    yield exp
    registry._REGISTRY.pop("_fake", None)


def test_run_id_is_filename_safe_and_distinct() -> None:
    ids = {
        RunSpec("e", "bloop", lam, 0.01, 0, "smoke").run_id
        for lam in [0.0, 1e-3, 4.6416e-3, 2.15e-2, 1.0, 1e3]
    }
    assert len(ids) == 6
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyz_0123456789.+-") for i in ids)
    assert format_float(0.0) == "0" and format_float(0.01) == "1e-02"


def test_record_round_trip(tmp_path: Path) -> None:
    spec = RunSpec("_x", "mixed", 0.5, 0.01, 3, "smoke")
    rec = complete_record(
        spec, {"final": {"a": math.inf, "b": 1.5}, "extra": {"l": [math.nan, 2.0]}}, 1.25
    )
    path = write_record(tmp_path, rec)
    assert path == run_path(tmp_path, spec) == tmp_path / "_x" / "runs" / f"{spec.run_id}.json"
    assert "Infinity" not in path.read_text() and "NaN" not in path.read_text()  # strict JSON
    json.loads(path.read_text())
    (back,) = read_records(tmp_path, "_x")
    assert back["final"]["a"] == math.inf and math.isnan(back["extra"]["l"][0])
    assert back["spec"] == rec["spec"] and back["wall_time_s"] == 1.25
    assert is_done(tmp_path, spec)
    assert not is_done(tmp_path, RunSpec("_x", "mixed", 0.5, 0.01, 3, "default"))  # other budget
    assert not list(path.parent.glob("*.tmp"))


def test_corrupt_record_is_not_done(tmp_path: Path) -> None:
    spec = RunSpec("_x", "bloop", 1.0, 0.01, 0, "smoke")
    path = run_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": 1, "spec"')
    assert not is_done(tmp_path, spec) and read_records(tmp_path, "_x") == []


def test_validate_record_rejects_bad_trajectory() -> None:
    spec = RunSpec("_x", "bloop", 1.0, 0.01, 0, "smoke")
    rec = complete_record(spec, {"trajectory": {"step": [0, 1], "train_main": [1.0]}}, 0.0)
    with pytest.raises(ValueError, match="trajectory"):
        validate_record(rec)
    with pytest.raises(ValueError, match="final lacks"):
        validate_record(complete_record(spec, {}, 0.0), require_losses=True)


def test_expand_gives_one_run_per_lam_for_methods_without_rho() -> None:
    specs = expand("_f", ["bloop", "mixed"], [0.0, 1.0], [0.01, 0.1], [0, 1], "smoke")
    assert len([s for s in specs if s.method == "bloop"]) == 8
    assert len([s for s in specs if s.method == "mixed"]) == 4


def test_sweep_is_resumable(fake: Experiment, tmp_path: Path) -> None:
    log = io.StringIO()
    first = run_sweep(
        "_fake", ["bloop", "mixed"], [0.0, 1.0], [0.01], [0], "smoke", 1, tmp_path, stream=log
    )
    assert first.ok and len(first.completed) == 4 and len(CALLS) == 4
    assert "4/4" in log.getvalue()
    second = run_sweep(
        "_fake", ["bloop", "mixed"], [0.0, 1.0, 2.0], [0.01], [0], "smoke", 1, tmp_path, stream=log
    )
    assert len(second.skipped) == 4 and len(second.completed) == 2
    assert len(CALLS) == 6  # only the two new runs were computed
    assert len(read_records(tmp_path, "_fake")) == 6


def test_failed_run_does_not_stop_the_sweep(fake: Experiment, tmp_path: Path) -> None:
    log = io.StringIO()
    res = run_sweep("_fake", ["bloop"], [13.0, 1.0], [0.01], [0], "smoke", 1, tmp_path, stream=log)
    assert not res.ok and len(res.failed) == 1 and len(res.completed) == 1
    assert "boom" in res.failed[0][1] and "FAILED" in log.getvalue()
    assert not is_done(tmp_path, RunSpec("_fake", "bloop", 13.0, 0.01, 0, "smoke"))


def test_registry_get_unknown_lists_names() -> None:
    with pytest.raises(ValueError, match="quadratic"):
        registry.get("nope")
    with pytest.raises(ValueError, match="Invalid methods"):
        register(
            Experiment(
                name="_bad", title="", paper_ref="", kind="sweep", run=_fake_run, methods=("sgd",)
            )
        )


def test_eval_steps_and_schedule() -> None:
    assert eval_steps(10, 3) == [0, 3, 6, 9, 10]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = cosine_with_warmup(opt, total_steps=4, warmup_steps=2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 1.0, 2.0, 1.0])


@pytest.mark.parametrize("method", registry.METHODS)
def test_train_records_trajectory_and_reduces_main(method: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    X, y = torch.randn(32, 3), torch.randn(32, 1)
    batches = iter(lambda: (X, y), None)

    def main_loss(m: torch.nn.Module, b: Any) -> torch.Tensor:
        return torch.mean((m(b[0]) - b[1]) ** 2)

    def aux_loss(m: torch.nn.Module, b: Any) -> torch.Tensor:
        return 0.5 * sum((p**2).sum() for p in m.parameters())

    def evaluate() -> dict[str, float]:
        mm, aa = float(main_loss(model, (X, y))), float(aux_loss(model, None))
        return {"train_main": mm, "train_aux": aa, "eval_main": mm, "eval_aux": aa, "norm": aa}

    rec = train(
        RunSpec("_t", method, 0.1, 0.5, 0, "smoke"),
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        batches=batches,
        main_loss=main_loss,
        aux_loss=aux_loss,
        steps=50,
        evaluate=evaluate,
        eval_every=20,
    )
    validate_record(rec, require_losses=True)
    assert rec["trajectory"]["step"] == [0, 20, 40, 50]
    assert rec["trajectory"]["norm"][-1] == rec["final"]["norm"]
    assert rec["final"]["train_main"] < rec["trajectory"]["train_main"][0]


POINTS = {
    ("bloop", 1.0): (0.1, 0.1),
    ("bloop", 2.0): (0.2, 0.05),
    ("mixed", 1.0): (0.3, 0.3),
    ("mixed", 2.0): (0.05, 0.5),
}


def _points_run(spec: RunSpec) -> dict[str, Any]:
    x, y = POINTS[(spec.method, spec.lam)]
    return {
        "final": {"train_main": x, "train_aux": y, "eval_main": x, "eval_aux": y, "dist": x + y}
    }


def test_report_pareto_summary_and_files(tmp_path: Path) -> None:
    from torchbloop.experiments.analysis.report import pareto_summary, write_report

    register(
        Experiment(
            name="_pts",
            title="points",
            paper_ref="-",
            kind="sweep",
            run=_points_run,
            methods=("bloop", "mixed"),
        )
    )
    try:
        res = run_sweep(
            "_pts",
            ["bloop", "mixed"],
            [1.0, 2.0],
            [0.01],
            [0],
            "smoke",
            1,
            tmp_path,
            stream=io.StringIO(),
        )
        assert res.ok
        summary = pareto_summary(read_records(tmp_path, "_pts"))
        train = summary["train"]
        assert train["space"] == "log10"
        assert train["dominance"] == [("Bloop", "Mixed", 1, 2, 0, 2)]
        assert train["hv"]["Bloop"] > train["hv"]["Mixed"] > 0
        readme = write_report(tmp_path)
        text = (tmp_path / "_pts" / "report.md").read_text()
        assert "Bloop's front dominates 1/2 of Mixed's end points" in text
        assert "_pts/report.md" in readme.read_text()
        rows = (tmp_path / "_pts" / "endpoints.csv").read_text().splitlines()
        assert (
            rows[0].startswith("method,lam,rho,seed,budget,train_main")
            and "dist" in rows[0]
            and len(rows) == 5
        )
        assert (tmp_path / "_pts" / "pareto.png").stat().st_size > 10_000
    finally:
        registry._REGISTRY.pop("_pts", None)
