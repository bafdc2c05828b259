"""Run a sweep: expand it into runs, skip finished ones, run the rest (in worker processes).

Every (method, lam, rho, seed) is one run, including ``lam = 0`` once per method: all methods
reduce to plain training on the main loss there, so those runs are repeats; they are kept
because they are cheap and show run-to-run agreement (and bugs) honestly.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .registry import RunSpec, get
from .results import complete_record, is_done, validate_record, write_record


@dataclass
class SweepResult:
    """What a sweep did: runs skipped (already on disk), run, and failed (with tracebacks)."""

    skipped: list[RunSpec] = field(default_factory=list)
    completed: list[RunSpec] = field(default_factory=list)
    failed: list[tuple[RunSpec, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no run failed."""
        return not self.failed


def expand(
    experiment: str,
    methods: Sequence[str],
    lams: Sequence[float],
    rhos: Sequence[float],
    seeds: Sequence[int],
    budget: str,
) -> list[RunSpec]:
    """All runs of a sweep. Non-Bloop methods ignore rho, so they get one run per lam (at rhos[0])."""
    specs: list[RunSpec] = []
    for method in methods:
        method_rhos = rhos if method == "bloop" else rhos[:1]
        for rho in method_rhos:
            for lam in lams:
                for seed in seeds:
                    specs.append(
                        RunSpec(experiment, method, float(lam), float(rho), int(seed), budget)
                    )
    return specs


def run_one(spec: RunSpec, out_dir: str, single_thread: bool = False) -> tuple[RunSpec, str | None]:
    """Run ``spec`` and write its record; return ``(spec, None)`` or ``(spec, traceback)``."""
    try:
        if single_thread:
            import torch

            torch.set_num_threads(1)
        experiment = get(spec.experiment)
        start = time.perf_counter()
        result = experiment.run(spec)
        record = complete_record(spec, result, time.perf_counter() - start)
        validate_record(record, require_losses=experiment.kind == "sweep")
        write_record(out_dir, record)
        return spec, None
    except Exception:
        return spec, traceback.format_exc()


class _Progress:
    """A plain text progress bar on a stream (one line per update when not a terminal)."""

    def __init__(self, total: int, label: str, stream: TextIO) -> None:
        self.total, self.label, self.stream = total, label, stream
        self.done = self.failed = 0
        self.start = time.perf_counter()
        self.tty = getattr(stream, "isatty", lambda: False)()

    def update(self, spec: RunSpec, error: str | None) -> None:
        self.done += 1
        self.failed += error is not None
        width = 30
        filled = int(width * self.done / max(1, self.total))
        bar = "#" * filled + "." * (width - filled)
        status = "FAILED" if error else "ok"
        line = (
            f"{self.label} [{bar}] {self.done}/{self.total} "
            f"({self.failed} failed, {time.perf_counter() - self.start:.0f}s) {spec.run_id} {status}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_sweep(
    experiment: str,
    methods: Sequence[str],
    lams: Sequence[float],
    rhos: Sequence[float],
    seeds: Sequence[int],
    budget: str,
    jobs: int,
    out_dir: str | Path,
    stream: TextIO | None = None,
) -> SweepResult:
    """Run every not-yet-finished run of the sweep; a failing run does not stop the others.

    Args:
        experiment: registered name.
        methods, lams, rhos, seeds: the grid (see :func:`expand`).
        budget: one of :data:`~torchbloop.experiments.registry.BUDGETS`.
        jobs: worker processes (spawned, one torch thread each); 1 runs in this process.
        out_dir: results root (``OUT``); records go to ``OUT/<experiment>/runs/``.
        stream: where progress and failures are written (default: stderr).

    Returns:
        A :class:`SweepResult`; failures are also printed with their tracebacks.
    """
    stream = stream or sys.stderr
    out = str(out_dir)
    result = SweepResult()
    todo: list[RunSpec] = []
    for spec in expand(experiment, methods, lams, rhos, seeds, budget):
        (result.skipped if is_done(out, spec) else todo).append(spec)
    if result.skipped:
        stream.write(f"{experiment}: {len(result.skipped)} run(s) already done, skipped\n")
    progress = _Progress(len(todo), experiment, stream)

    def collect(spec: RunSpec, error: str | None) -> None:
        if error is None:
            result.completed.append(spec)
        else:
            result.failed.append((spec, error))
        progress.update(spec, error)

    if jobs == 1 or len(todo) <= 1:
        for spec in todo:
            collect(*run_one(spec, out))
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
            futures = {pool.submit(run_one, spec, out, True): spec for spec in todo}
            for fut in cf.as_completed(futures):
                try:
                    collect(*fut.result())
                except Exception:  # the worker died (e.g. killed): record, keep going
                    collect(futures[fut], traceback.format_exc())
    for spec, error in result.failed:
        stream.write(f"\nFAILED {spec.experiment}/{spec.run_id}:\n{error}")
    return result
