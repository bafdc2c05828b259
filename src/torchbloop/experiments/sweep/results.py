"""Raw results on disk: one JSON record per run; reports only ever read these.

Layout::

    OUT/<experiment>/runs/<run_id>.json   one record per run (written atomically)
    OUT/<experiment>/endpoints.csv        flat table of end points (written by ``report``)
    OUT/<experiment>/report.md, *.png     the report (written by ``report``)
    OUT/README.md                         index of the experiment reports

Non-finite floats are stored as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON)
and read back as floats. Record schema (``schema`` = 2); every list in ``trajectory`` has one
entry per eval point::

    {
      "schema": 2,
      "spec": {"experiment", "method", "lam", "rho", "seed", "budget", "variant"},  # RunSpec
                                     # fields; lam is a number or a list (one per aux loss)
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
curves); ``train_<o>`` and ``eval_<o>`` for each objective ``o`` of the experiment
(``main``, ``aux`` by default) are required in ``final`` of a ``sweep`` experiment.

Versions. Schema 1 (torchbloop 0.1; every record committed under ``docs/results`` before the
method table) had no ``variant`` in ``spec`` and a float ``lam``: it is migrated on reading
(:func:`migrate`, ``variant = ""``), so its ``run_id`` and file name stay the same. A record
that cannot be read, has an unknown schema or does not fit it raises :class:`RecordError`
naming the file; nothing is skipped silently.
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


class RecordError(ValueError):
    """A record on disk that cannot be used: unreadable, unknown schema, or not fitting it.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"Invalid record {self.path}: {reason}")


def _migrate_1_to_2(record: Record) -> Record:
    spec = dict(record["spec"])
    spec.setdefault("variant", "")
    return {**record, "schema": 2, "spec": spec}


_MIGRATIONS = {1: _migrate_1_to_2}
"""``{version: step}``: each step turns a record of that version into the next version."""


def migrate(record: Mapping[str, Any]) -> Record:
    """``record`` brought to :data:`SCHEMA_VERSION` by the migration steps, one version at a time.

    Raises:
        ValueError: the schema is missing, not an integer, or newer than this torchbloop
            knows (upgrade torchbloop to read it).

    Example:
        >>> old = {"schema": 1, "spec": {"experiment": "q", "method": "mixed", "lam": 0.1,
        ...        "rho": 0.01, "seed": 0, "budget": "smoke"}}
        >>> new = migrate(old)
        >>> new["schema"], new["spec"]["variant"]
        (2, '')
    """
    version = record.get("schema")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"schema={version!r} is not an integer version")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"schema={version} is newer than this torchbloop reads ({SCHEMA_VERSION}): "
            "upgrade torchbloop"
        )
    out = dict(record)
    while out["schema"] < SCHEMA_VERSION:
        step = _MIGRATIONS.get(out["schema"])
        if step is None:
            raise ValueError(f"schema={out['schema']} has no migration to {SCHEMA_VERSION}")
        out = step(out)
    return out


SCHEMA_VERSION = 2
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


def validate_record(
    record: Mapping[str, Any],
    *,
    require_losses: bool = False,
    final_keys: tuple[str, ...] = LOSS_KEYS,
) -> None:
    """Check ``record`` against the schema of this version.

    Args:
        record: the record.
        require_losses: also require ``final_keys`` in ``final`` (a sweep experiment's).
        final_keys: the keys required then (see :meth:`Experiment.final_keys`).

    Raises:
        ValueError: a key is missing, the spec does not build a :class:`RunSpec`, a trajectory
            list has the wrong length, or a curve is malformed.
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
    try:
        RunSpec(**record["spec"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid record spec: {e}") from None
    traj = record["trajectory"]
    if traj:
        n = len(traj.get("step", []))
        bad = [k for k, v in traj.items() if len(v) != n]
        if bad or n == 0:
            raise ValueError(f"Invalid trajectory: lists {bad} do not match 'step' (length {n})")
    if require_losses:
        absent = [k for k in final_keys if k not in record["final"]]
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
    path = run_path(out_dir, spec_of(record))
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


def spec_of(record: Mapping[str, Any]) -> RunSpec:
    """The :class:`RunSpec` of a (validated) record; a JSON list lam becomes a tuple."""
    return RunSpec(**record["spec"])


def load_record(path: str | Path) -> Record:
    """The record in ``path``, migrated to :data:`SCHEMA_VERSION` and validated.

    Raises:
        RecordError: unreadable file, invalid JSON, unknown schema, or a record that does not
            fit the schema (the message names the file and the reason).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(path, f"cannot be read ({e})") from None
    if not isinstance(raw, dict):
        raise RecordError(path, f"a JSON {type(raw).__name__}, not an object")
    try:
        record: Record = migrate(_from_json(raw))
        validate_record(record)
        record["spec"] = dataclasses.asdict(spec_of(record))
    except (ValueError, TypeError, KeyError) as e:
        raise RecordError(path, str(e)) from None
    return record


def read_records(out_dir: str | Path, experiment: str) -> list[Record]:
    """All records of ``experiment`` under ``out_dir`` (migrated), sorted by file name.

    Raises:
        RecordError: one or more files are not usable records; the message lists every such
            file with its reason (move or delete them, or rerun those runs).
    """
    runs = experiment_dir(out_dir, experiment) / "runs"
    records, errors = [], []
    for path in sorted(runs.glob("*.json")):
        try:
            records.append(load_record(path))
        except RecordError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        lines = "; ".join(f"{e.path.name}: {e.reason}" for e in errors)
        raise RecordError(runs, f"{len(errors)} unusable records: {lines}")
    return records


def is_done(out_dir: str | Path, spec: RunSpec) -> bool:
    """Whether a record of ``spec`` (same fields, budget included) is on disk.

    Raises:
        RecordError: a file is at the run's path but is not a usable record (never silently
            treated as missing and overwritten).
    """
    path = run_path(out_dir, spec)
    if not path.exists():
        return False
    return spec_of(load_record(path)) == spec


def experiments_in(out_dir: str | Path) -> list[str]:
    """Names of the experiments that have at least one record under ``out_dir``."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / "runs").is_dir() and read_records(root, p.name)
    )
