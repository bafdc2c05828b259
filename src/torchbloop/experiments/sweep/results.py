"""Raw results on disk: one JSON record per run; reports only ever read these.

Layout::

    OUT/<experiment>/runs/<run_id>.json   one record per run (written atomically)
    OUT/<experiment>/endpoints.csv        flat table of end points (written by ``report``)
    OUT/<experiment>/report.md, *.png     the report (written by ``report``)
    OUT/README.md                         index of the experiment reports

Non-finite floats are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON)
and read back as floats. Record schema (``schema`` = 1); every list in ``trajectory`` has one entry per eval point::

    {
      "schema": 1,
      "spec": {"experiment", "method", "lam", "rho", "seed", "budget"},   # RunSpec fields
      "config": {...},               # experiment-specific settings (steps, lr, sizes, ...)
      "trajectory": {"step": [...], "train_main": [...], "train_aux": [...],
                     "eval_main": [...], "eval_aux": [...], <extra metric>: [...]},
      "final": {"train_main", "train_aux", "eval_main", "eval_aux", <extra metric>: ...},
      "curves": {name: {"x": [...], "y": [...], "label": str, "xlabel": str, "ylabel": str,
                        optional "xscale"/"yscale": "log"|"linear", "panel": str}},
      "extra": {...},                # anything else; "optimum": {train_main, ...} is drawn
                                     # as a star on the Pareto plot when present
      "wall_time_s": float
    }

``trajectory``, ``final`` and ``curves`` may be empty (e.g. an analysis run has only
curves); the four loss keys are required in ``final`` of a ``sweep`` experiment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .registry import Record, RunSpec

SCHEMA_VERSION = 1
LOSS_KEYS: tuple[str, ...] = ("train_main", "train_aux", "eval_main", "eval_aux")
_TOP_KEYS = ("schema", "spec", "config", "trajectory", "final", "curves", "extra", "wall_time_s")


def experiment_dir(out_dir: str | Path, experiment: str) -> Path:
    """``OUT/<experiment>``."""
    return Path(out_dir) / experiment


def run_path(out_dir: str | Path, spec: RunSpec) -> Path:
    """``OUT/<experiment>/runs/<run_id>.json``."""
    return experiment_dir(out_dir, spec.experiment) / "runs" / f"{spec.run_id}.json"


def complete_record(spec: RunSpec, result: Mapping[str, Any], wall_time_s: float) -> Record:
    """A schema-1 record from what an experiment's ``run`` returned (missing parts empty)."""
    record: Record = {
        "schema": SCHEMA_VERSION,
        "spec": dataclasses.asdict(spec),
        "config": dict(result.get("config", {})),
        "trajectory": dict(result.get("trajectory", {})),
        "final": dict(result.get("final", {})),
        "curves": dict(result.get("curves", {})),
        "extra": dict(result.get("extra", {})),
        "wall_time_s": float(result.get("wall_time_s", wall_time_s)),
    }
    return record


def validate_record(record: Mapping[str, Any], *, require_losses: bool = False) -> None:
    """Check ``record`` against the schema.

    Raises:
        ValueError: a key is missing, a trajectory list has the wrong length, or a curve is
            malformed.
    """
    missing = [k for k in _TOP_KEYS if k not in record]
    if missing:
        raise ValueError(f"Invalid record: missing keys {missing}")
    if record["schema"] != SCHEMA_VERSION:
        raise ValueError(f"Invalid record schema={record['schema']!r}: must be {SCHEMA_VERSION}")
    spec_keys = {f.name for f in dataclasses.fields(RunSpec)}
    if set(record["spec"]) != spec_keys:
        raise ValueError(
            f"Invalid record spec keys {sorted(record['spec'])}: must be {sorted(spec_keys)}"
        )
    traj = record["trajectory"]
    if traj:
        n = len(traj.get("step", []))
        bad = [k for k, v in traj.items() if len(v) != n]
        if bad or n == 0:
            raise ValueError(f"Invalid trajectory: lists {bad} do not match 'step' (length {n})")
    if require_losses:
        absent = [k for k in LOSS_KEYS if k not in record["final"]]
        if absent:
            raise ValueError(f"Invalid record: final lacks {absent}")
    for name, curve in record["curves"].items():
        if not {"x", "y"} <= set(curve) or len(curve["x"]) != len(curve["y"]):
            raise ValueError(f"Invalid curve {name!r}: needs 'x' and 'y' of equal length")


def _jsonable(x: Any) -> Any:
    """Floats that are not finite become strings JSON can carry ("nan", "inf", "-inf")."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _from_json(x: Any) -> Any:
    """Inverse of :func:`_jsonable`."""
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, dict):
        return {k: _from_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    return x


def write_record(out_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` to its run path atomically (temporary file, then rename)."""
    spec = RunSpec(**record["spec"])
    path = run_path(out_dir, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(dict(record)), f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _load(path: Path) -> Record | None:
    try:
        record: Record = _from_json(json.loads(path.read_text()))
        validate_record(record)
    except (OSError, ValueError, TypeError):
        return None
    return record


def read_records(out_dir: str | Path, experiment: str) -> list[Record]:
    """All valid records of ``experiment`` under ``out_dir``, sorted by file name."""
    runs = experiment_dir(out_dir, experiment) / "runs"
    records = [_load(p) for p in sorted(runs.glob("*.json"))]
    return [r for r in records if r is not None]


def is_done(out_dir: str | Path, spec: RunSpec) -> bool:
    """Whether a valid record of ``spec`` (same fields, budget included) is on disk."""
    record = _load(run_path(out_dir, spec))
    return record is not None and RunSpec(**record["spec"]) == spec


def experiments_in(out_dir: str | Path) -> list[str]:
    """Names of the experiments that have at least one record under ``out_dir``."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / "runs").is_dir() and read_records(root, p.name)
    )
