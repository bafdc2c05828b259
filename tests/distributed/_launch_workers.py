"""Workers of the launcher's own tests: ranks that succeed, fail, crash or die at exit."""

from __future__ import annotations

import atexit
import os
import resource
import time

import torch
import torch.distributed as dist


def _abort_quietly() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from the deliberate abort
    os.abort()


def _agreed(rank: int) -> dict[str, float]:
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return {"rank": rank, "sum": float(t)}


def succeed(rank: int, world: int) -> dict[str, float]:
    """Checks pass on every rank, and every rank exits cleanly."""
    return _agreed(rank)


def succeed_then_abort(rank: int, world: int) -> dict[str, float]:
    """Checks pass on every rank; rank 1 then aborts in its exit handlers (SIGABRT)."""
    if rank == 1:
        atexit.register(_abort_quietly)
    return _agreed(rank)


def succeed_then_hang(rank: int, world: int) -> dict[str, float]:
    """Checks pass on every rank; rank 0 then never finishes exiting."""
    if rank == 0:
        atexit.register(time.sleep, 3600)
    return _agreed(rank)


def fail_assertion(rank: int, world: int) -> dict[str, float]:
    """Rank 1's check fails; rank 0 then fails in a collective that rank 1 never joins."""
    if rank == 1:
        raise AssertionError("rank one disagrees: 3.0 != 4.0")
    return _agreed(rank)


def fail_while_other_hangs(rank: int, world: int) -> dict[str, float]:
    """Rank 1's check fails; rank 0 never finishes (it must be stopped, not awaited)."""
    if rank == 1:
        raise AssertionError("rank one disagrees: 3.0 != 4.0")
    time.sleep(3600)
    return _agreed(rank)


def abort_before_result(rank: int, world: int) -> dict[str, float]:
    """Rank 0 crashes (SIGABRT) before it could write anything."""
    if rank == 0:
        _abort_quietly()
    return {"rank": rank, "sum": 0.0}


def sleep_forever(rank: int, world: int) -> dict[str, float]:
    time.sleep(3600)
    return {"rank": rank, "sum": 0.0}
