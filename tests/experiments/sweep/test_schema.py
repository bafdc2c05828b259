"""Record schema versions: schema-1 records migrate, bad ones are errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from torchbloop.experiments.sweep.registry import RunSpec
from torchbloop.experiments.sweep.results import (
    SCHEMA_VERSION,
    RecordError,
    complete_record,
    is_done,
    load_record,
    migrate,
    read_records,
    run_path,
    spec_of,
    write_record,
)

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "results"


def _schema1(spec: dict[str, Any]) -> dict[str, Any]:
    """A record as torchbloop 0.1 wrote it (no ``variant`` in spec)."""
    return {
        "schema": 1,
        "spec": spec,
        "config": {},
        "trajectory": {},
        "final": {"train_main": 1.0, "train_aux": 2.0, "eval_main": 1.5, "eval_aux": 2.0},
        "curves": {},
        "extra": {},
        "wall_time_s": 0.5,
    }


def _write(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


SPEC1 = {
    "experiment": "_x",
    "method": "mixed",
    "lam": 0.1,
    "rho": 0.01,
    "seed": 0,
    "budget": "smoke",
}


def test_schema1_record_migrates_and_keeps_its_run_id(tmp_path: Path) -> None:
    spec = RunSpec(**SPEC1)
    path = _write(run_path(tmp_path, spec), _schema1(SPEC1))
    record = load_record(path)
    assert record["schema"] == SCHEMA_VERSION == 2
    assert record["spec"]["variant"] == "" and spec_of(record) == spec
    assert is_done(tmp_path, spec)  # a resumed sweep does not redo old runs
    (back,) = read_records(tmp_path, "_x")
    assert back["final"] == _schema1(SPEC1)["final"]


def test_migrate_refuses_newer_and_malformed_versions() -> None:
    with pytest.raises(ValueError, match="newer than this torchbloop"):
        migrate({**_schema1(SPEC1), "schema": SCHEMA_VERSION + 1})
    for bad in (None, "1", 1.0, True):
        with pytest.raises(ValueError, match="not an integer"):
            migrate({**_schema1(SPEC1), "schema": bad})
    with pytest.raises(ValueError, match="no migration"):
        migrate({**_schema1(SPEC1), "schema": 0})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: {**r, "schema": 99}, "newer"),
        (lambda r: {k: v for k, v in r.items() if k != "final"}, "missing keys"),
        (lambda r: {**r, "spec": {**r["spec"], "new_field": 1}}, "spec keys"),
        (lambda r: {**r, "spec": {**r["spec"], "lam": "big"}}, "lam"),
        (lambda r: {**r, "spec": {**r["spec"], "lam": []}}, "lam"),
        (lambda r: [r], "not an object"),
    ],
)
def test_records_that_do_not_fit_are_errors_naming_the_file(
    tmp_path: Path, change: Any, reason: str
) -> None:
    good = _write(tmp_path / "_x" / "runs" / "good.json", _schema1(SPEC1))
    bad = _write(tmp_path / "_x" / "runs" / "bad.json", change(_schema1(SPEC1)))
    with pytest.raises(RecordError, match=reason) as info:
        read_records(tmp_path, "_x")
    assert info.value.path == bad and "bad.json" in str(info.value)
    assert load_record(good)["schema"] == SCHEMA_VERSION


def test_several_bad_records_are_all_listed(tmp_path: Path) -> None:
    runs = tmp_path / "_x" / "runs"
    _write(runs / "a.json", {"schema": 99})
    (runs / "b.json").write_text("{not json")
    with pytest.raises(RecordError, match=r"2 unusable records: a\.json: .*; b\.json: "):
        read_records(tmp_path, "_x")


def test_k_level_spec_round_trip(tmp_path: Path) -> None:
    spec = RunSpec("_k", "bloop", (0.1, 0.01), 0.01, 2, "smoke")
    assert spec.levels == (0.1, 0.01) and spec.run_id == "bloop_lam1e-01,1e-02_rho1e-02_seed2"
    path = write_record(tmp_path, complete_record(spec, {}, 1.0))
    assert json.loads(path.read_text())["spec"]["lam"] == [0.1, 0.01]
    assert spec_of(load_record(path)) == spec and is_done(tmp_path, spec)
    assert not is_done(tmp_path, RunSpec("_k", "bloop", (0.1, 0.02), 0.01, 2, "smoke"))
    summed = RunSpec("_k", "bloop", (0.1, 0.01), 0.01, 2, "smoke", variant="summed")
    assert summed.run_id.endswith("_summed") and not is_done(tmp_path, summed)


def test_one_level_lam_is_the_float_lam() -> None:
    assert RunSpec("_k", "bloop", [0.1], 0.01, 0, "smoke") == RunSpec(
        "_k", "bloop", 0.1, 0.01, 0, "smoke"
    )
    with pytest.raises(ValueError, match="variant"):
        RunSpec("_k", "bloop", 0.1, 0.01, 0, "smoke", variant="Has Space")
    with pytest.raises(ValueError, match="one aux weight"):
        _ = RunSpec("_k", "bloop", (0.1, 0.2), 0.01, 0, "smoke").scalar_lam


def _committed() -> list[Path]:
    return sorted(COMMITTED.glob("*/runs/*.json"))


@pytest.mark.skipif(not _committed(), reason="no committed records in this checkout")
def test_every_committed_record_loads_with_its_file_name_as_run_id() -> None:
    """All committed records (schema 1) load: none is dropped, none changes its run_id."""
    paths = _committed()
    by_experiment: dict[str, int] = {}
    for path in paths:
        record = load_record(path)
        assert spec_of(record).run_id == path.stem, path
        by_experiment[path.parent.parent.name] = by_experiment.get(path.parent.parent.name, 0) + 1
    for name, count in by_experiment.items():
        assert len(read_records(COMMITTED, name)) == count
