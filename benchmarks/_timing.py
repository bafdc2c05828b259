"""Side-by-side timing: every candidate runs once per round, rounds repeat, medians are kept.

Interleaving the candidates makes their ratios robust to a machine whose load changes over
time (other processes share the cores): a slow period slows every candidate of that round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

CLOCK: Callable[[], float] = time.perf_counter
"""The timer :func:`measure` uses; ``run.py --clock cpu`` sets ``time.process_time``."""


def measure(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 2,
    setup: Callable[[], object] | None = None,
    clock: Callable[[], float] | None = None,
) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` interleaved rounds.

    Args:
        fns: name -> function to time (it must finish its work before returning; CPU ops do).
        repeats: timed rounds.
        warmup: untimed rounds first (allocator, caches, lazy initialisation).
        setup: called, untimed, before every call.
        clock: the timer (default :data:`CLOCK`).
    """
    clock = clock or CLOCK
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            if setup is not None:
                setup()
            start = clock()
            fn()
            elapsed = clock() - start
            if r >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(ts) for name, ts in times.items()}
