"""Run a sweep: expand it into runs, skip finished ones, run the rest (in worker processes).

Every (method, lam, rho, seed) is one run, including ``lam = 0`` once per method: all methods
reduce to plain training on the main loss there, so those runs are repeats; they are kept
because they are cheap and show run-to-run agreement (and bugs) honestly.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ... import methods as method_table
from .registry import Lam, RunSpec, as_lam, get
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
    lams: Sequence[Lam | Sequence[float]],
    rhos: Sequence[float],
    seeds: Sequence[int],
    budget: str,
    variants: Mapping[str, Sequence[str]] | None = None,
) -> list[RunSpec]:
    """All runs of a sweep, in the order given.

    A method whose table entry (:data:`torchbloop.methods.METHODS`) does not list ``rho`` gets
    one run per lam (at ``rhos[0]``); one that does not list ``lam`` (MetaBalance, the original
    Dynamic Barrier: no weight to sweep) gets one run per seed, whatever ``lams``, recorded at
    ``lam =`` :data:`~torchbloop.methods.FIXED_LAM` (see
    :attr:`~torchbloop.methods.MethodInfo.takes_lam`); ``variants`` maps a method to its extra
    variants, each run beside the plain method (see :meth:`Experiment.variants_of`).

    Raises:
        ValueError: an unknown method (the message lists the valid ones).
    """
    specs: list[RunSpec] = []
    for method in methods:
        info = method_table.get_method(method)
        method_rhos = rhos if "rho" in info.hyperparameters else rhos[:1]
        method_lams = lams if info.takes_lam else [method_table.FIXED_LAM]
        for variant in ("", *(variants or {}).get(method, ())):
            for rho in method_rhos:
                for lam in method_lams:
                    for seed in seeds:
                        specs.append(
                            RunSpec(
                                experiment,
                                method,
                                as_lam(lam),
                                float(rho),
                                int(seed),
                                budget,
                                variant=variant,
                            )
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
        validate_record(
            record, require_losses=experiment.kind == "sweep", final_keys=experiment.final_keys()
        )
        write_record(out_dir, record)
        return spec, None
    except Exception:
        return spec, traceback.format_exc()


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it ends the workers). Ignoring
    SIGINT discards one held back while the worker started; then it is unblocked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Hold Ctrl-C back in the block (main thread only); a Ctrl-C pressed meanwhile arrives
    when it ends, at a clean point.

    Two layers, because blocking SIGINT in this thread does not keep it out of the process: the
    kernel then hands it to another thread that does not block it (a BLAS or OpenMP thread
    started at import), Python's C handler runs there, and ``KeyboardInterrupt`` used to be
    raised here anyway, in the middle of ``ProcessPoolExecutor.submit``. Raised between the
    start of a worker and its registration, it left a worker nobody ended, which kept the run
    (and the terminal's pipes) alive after Ctrl-C. So:

    - the signal mask blocks SIGINT, which processes spawned in the block inherit: they never
      see it before :func:`_ignore_sigint` ignores it;
    - a Python-level handler records a SIGINT that arrives meanwhile; at the end the previous
      handler is restored and the signal raised again in this thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    if previous is None:  # a handler installed outside Python: the default stands in for it
        previous = signal.SIG_DFL
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if caught:  # delivered to this thread now, handled by the restored handler
            signal.raise_signal(signal.SIGINT)


def _end_workers(before: set[int | None]) -> None:
    """Terminate the child processes started since ``before`` (this sweep's workers)."""
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    for p in workers:
        p.terminate()
    for p in workers:
        p.join(timeout=5)
    for p in workers:  # a worker stuck where SIGTERM cannot end it
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


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
    lams: Sequence[Lam | Sequence[float]],
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
        methods, lams, rhos, seeds: the grid (see :func:`expand`; the experiment's variants
            are added).
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
    variants = get(experiment).variants
    for spec in expand(experiment, methods, lams, rhos, seeds, budget, variants):
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
        before = {p.pid for p in multiprocessing.active_children()}
        pool = cf.ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_ignore_sigint
        )
        try:
            # The workers start in submit: Ctrl-C held back there reaches only this process.
            with _sigint_blocked():
                futures = {pool.submit(run_one, spec, out, True): spec for spec in todo}
            for fut in cf.as_completed(futures):
                try:
                    collect(*fut.result())
                except Exception:  # the worker died (e.g. killed): record, keep going
                    collect(futures[fut], traceback.format_exc())
        except BaseException:  # Ctrl-C (or another stop): end the workers, keep what is done
            pool.shutdown(wait=False, cancel_futures=True)
            _end_workers(before)
            raise
        pool.shutdown(wait=True)
    for spec, error in result.failed:
        stream.write(f"\nFAILED {spec.experiment}/{spec.run_id}:\n{error}")
    return result
