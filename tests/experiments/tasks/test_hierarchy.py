"""The hierarchy experiment: three losses in priority order, K-level surgery through train().

The Fashion-MNIST loader is replaced by small synthetic images (as in test_vision_tasks)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from torchbloop.experiments.cli import main
from torchbloop.experiments.data import vision_batches
from torchbloop.experiments.sweep.registry import RunSpec, get
from torchbloop.experiments.sweep.results import complete_record, read_records, validate_record
from torchbloop.experiments.tasks import hierarchy

N = {"train": 600, "test": 200}


def _fake_fashion(split: str = "train", root: object = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = N[split]
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(len(split)))
    g = torch.Generator().manual_seed(n)
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, 2 * c + 4 : 2 * c + 7, :] = 250
    return images, labels


@pytest.fixture(autouse=True)
def fake_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(vision_batches, "load_fashion_mnist", _fake_fashion)
    vision_batches.fashion_split.cache_clear()
    yield
    vision_batches.fashion_split.cache_clear()
    torch.set_num_threads(threads)


def _run(method: str, lam: tuple[float, float], variant: str = "", steps: int = 12) -> dict:
    spec = RunSpec("hierarchy", method, lam, 0.01, 0, "smoke", variant=variant)
    record = hierarchy.run(spec, steps=steps)
    validate_record(
        complete_record(spec, record, 1.0),
        require_losses=True,
        final_keys=get("hierarchy").final_keys(),
    )
    return record


def test_registered_with_three_objectives_and_the_summed_variant() -> None:
    exp = get("hierarchy")
    assert exp.objectives == ("main", "smooth", "l2") and exp.max_levels == 2
    assert exp.variants_of("bloop") == ("", "summed") and exp.variants_of("mixed") == ("",)
    assert all(len(lam) == 2 for lam in exp.lams_for("default"))
    assert exp.lams_for("default")[0] == (0.0, 0.0)


def test_summed_variant_with_lam2_zero_equals_k_level_bloop_with_lam2_zero() -> None:
    """lam_2 = 0: both directions are g_0 + lam_1 pi(g_1; e_0), so the runs agree."""
    k_level = _run("bloop", (0.3, 0.0))
    summed = _run("bloop", (0.3, 0.0), variant="summed")
    for key in ("train_main", "train_smooth", "train_l2"):
        assert summed["final"][key] == pytest.approx(k_level["final"][key], rel=1e-4)


def test_levels_change_the_run() -> None:
    """Each weight acts: switching on L_2 lowers ||theta||^2 for every method."""
    for method, variant in (("bloop", ""), ("mixed", ""), ("bloop", "summed")):
        off = _run(method, (0.3, 0.0), variant)["final"]
        on = _run(method, (0.3, 3.0), variant)["final"]
        assert on["train_l2"] < off["train_l2"], (method, variant)
        assert all(math.isfinite(v) for v in on.values())


def test_protection_rows_by_hand() -> None:
    def rec(method: str, lam: tuple[float, float], main: float, smooth: float, l2: float) -> dict:
        spec = RunSpec("hierarchy", method, lam, 0.01, 0, "smoke")
        final = {"train_main": main, "train_smooth": smooth, "train_l2": l2}
        return complete_record(spec, {"final": final}, 1.0)

    records = [
        rec("mixed", (0.0, 0.0), 1.0, 5.0, 50.0),
        rec("mixed", (0.1, 0.0), 1.5, 3.0, 45.0),
        rec("mixed", (0.1, 0.2), 2.0, 2.5, 10.0),
    ]
    rows = hierarchy.protection_rows(records)
    assert rows[0] == ["Mixed", 1, 0.1, 0.0, 0.5, pytest.approx(math.nan, nan_ok=True), -2.0]
    assert rows[1] == ["Mixed", 2, 0.1, 0.2, 0.5, -0.5, -35.0]


def test_cli_smoke_sweep_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchbloop.experiments import cli

    monkeypatch.setattr(cli, "missing_datasets", lambda experiments: {})
    out = tmp_path / "res"
    assert (
        main(["run", "hierarchy", "--budget", "smoke", "--methods", "pcgrad", "--out", str(out)])
        == 2
    )
    assert main(["run", "hierarchy", "--budget", "smoke", "--out", str(out)]) == 0
    records = read_records(out, "hierarchy")
    assert len(records) == 3 * len(get("hierarchy").lams_for("smoke"))
    assert {r["spec"]["variant"] for r in records} == {"", "summed"}
    assert main(["report", str(out)]) == 0
    text = (out / "hierarchy" / "report.md").read_text()
    assert "## Protection per level" in text and "(main, smooth, l2) end points" in text
    assert "Bloop (summed)" in text
    for png in ("pareto.png", "levels.png"):
        assert (out / "hierarchy" / png).stat().st_size > 10_000
