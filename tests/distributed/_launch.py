"""Run a function on a real process group (gloo on CPU; nccl on GPUs) and collect what each rank returns.

The verdict is taken from what the ranks WROTE, not from their exit codes: a rank succeeds when
``fn`` returned and its result file was written (atomically, before the process group is torn
down). A rank that wrote its result and then exited abnormally (a gloo rank sometimes aborts in
its exit handlers after FSDP2 + DCP, with or without torchbloop imported) is reported with an
:class:`AbnormalExitWarning`, not as a failure. A rank that wrote no result fails the launch
with its traceback (an exception in ``fn``, e.g. a failed assertion), or with its exit code or
signal (a crash), or as "killed" (it was still running after another rank failed, or after
``timeout``); the other ranks are then stopped instead of hanging in a collective.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

GRACE_S = 10.0
"""How long the other ranks may run on after one rank failed."""

EXIT_GRACE_S = 60.0
"""How long the ranks may take to exit once all wrote their results (interpreter shutdown with
torch loaded takes ~7 s on a loaded 2-core machine; a rank still running after this is stopped)."""


class LaunchError(AssertionError):
    """A rank wrote no result: it raised, crashed, or was killed (the message says which)."""


class AbnormalExitWarning(UserWarning):
    """A rank wrote its result and then did not exit cleanly (its result is used)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _result_path(out: str, rank: int) -> Path:
    return Path(out) / f"rank{rank}.pt"


def _error_path(out: str, rank: int) -> Path:
    return Path(out) / f"rank{rank}.err"


def _entry(
    rank: int,
    fn: Callable[..., Any],
    world: int,
    port: int,
    out: str,
    args: tuple[Any, ...],
    backend: str,
) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, rank=rank, world_size=world)
        result = fn(rank, world, *args)
        partial = _result_path(out, rank).with_suffix(".partial")
        torch.save(result, partial)
        os.replace(partial, _result_path(out, rank))  # the file exists only once complete
    except BaseException:
        _error_path(out, rank).write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "was still running and was killed"
    if code < 0:
        try:
            return f"died of signal {signal.Signals(-code).name}"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with code {code}"


def _stop(procs: list[Any]) -> set[int]:
    """Terminate (then kill) the processes still alive; the ranks that had to be stopped."""
    stopped = {rank for rank, p in enumerate(procs) if p.is_alive()}
    for rank in stopped:
        procs[rank].terminate()
    for rank in stopped:
        procs[rank].join(2.0)
        if procs[rank].is_alive():
            procs[rank].kill()
            procs[rank].join()
    return stopped


def launch(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    out: str,
    *,
    world: int,
    backend: str,
    timeout: float,
    grace: float = GRACE_S,
    exit_grace: float = EXIT_GRACE_S,
) -> tuple[list[str], list[str]]:
    """Run ``fn`` on ``world`` ranks writing into ``out``: ``(failures, abnormal exits)`` as texts."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(rank, fn, world, port, out, args, backend))
        for rank in range(world)
    ]
    try:
        for p in procs:
            p.start()
        return _judge(procs, out, world=world, timeout=timeout, grace=grace, exit_grace=exit_grace)
    finally:
        _stop(procs)


def _judge(
    procs: list[Any], out: str, *, world: int, timeout: float, grace: float, exit_grace: float
) -> tuple[list[str], list[str]]:
    deadline = time.monotonic() + timeout
    cut_off = deadline  # brought forward once a rank failed or every rank wrote its result
    timed_out = False
    while True:
        alive = [p for p in procs if p.is_alive()]
        if not alive:
            break
        written = all(_result_path(out, r).exists() for r in range(world))
        failed = any(
            not p.is_alive() and not _result_path(out, r).exists() for r, p in enumerate(procs)
        )
        if failed and cut_off == deadline:
            cut_off = min(deadline, time.monotonic() + grace)
        elif written and cut_off == deadline:
            cut_off = min(deadline, time.monotonic() + exit_grace)
        now = time.monotonic()
        if now >= cut_off:
            timed_out = cut_off == deadline
            break
        wait([p.sentinel for p in alive], timeout=min(0.2, cut_off - now))
    stopped = _stop(procs)
    raised: list[tuple[int, str]] = []
    failures: list[str] = []
    abnormal: list[str] = []
    for rank, p in enumerate(procs):
        how = _describe_exit(None if rank in stopped else p.exitcode)
        if _result_path(out, rank).exists():
            if rank in stopped or p.exitcode != 0:
                abnormal.append(f"rank {rank} wrote its result, then {how}")
            continue
        error = _error_path(out, rank)
        if error.exists():
            raised.append((error.stat().st_mtime_ns, f"rank {rank} raised:\n{error.read_text()}"))
        elif timed_out and rank in stopped:
            failures.append(f"rank {rank} wrote no result within {timeout:.0f} s and was killed")
        else:
            failures.append(f"rank {rank} wrote no result: it {how}")
    # the first rank to raise comes first: its traceback usually says why the others failed
    return [text for _, text in sorted(raised)] + failures, abnormal


def run_ranks(
    fn: Callable[..., Any],
    *args: Any,
    world: int = 2,
    backend: str = "gloo",
    timeout: float = 300.0,
    grace: float = GRACE_S,
    exit_grace: float = EXIT_GRACE_S,
) -> list[Any]:
    """``fn(rank, world, *args)`` on every rank of a fresh group; returns the results by rank.

    ``fn`` must be a module-level function (it is pickled by reference into spawned processes)
    and return something ``torch.save`` can write. Raises :class:`LaunchError` when a rank wrote
    no result; warns :class:`AbnormalExitWarning` for a rank that wrote one and then exited
    abnormally.
    """
    with tempfile.TemporaryDirectory() as out:
        failures, abnormal = launch(
            fn,
            args,
            out,
            world=world,
            backend=backend,
            timeout=timeout,
            grace=grace,
            exit_grace=exit_grace,
        )
        if failures:
            raise LaunchError("\n".join(failures))
        for text in abnormal:
            warnings.warn(text, AbnormalExitWarning, stacklevel=2)
        return [torch.load(_result_path(out, r), weights_only=False) for r in range(world)]
