"""DDP (gloo, world size 2, CPU): the surgeon's lines from single-process code train identically."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _ddp_workers import STEPS, _configs, train
from _launch import run_ranks

pytestmark = pytest.mark.distributed

CONFIGS = [
    {"aux": "data"},
    {"aux": "decay"},
    {"aux": "data", "micro": 2},
    {"aux": "data", "unused": True, "ddp_kwargs": {"find_unused_parameters": True}},
    {"aux": "decay", "ddp_kwargs": {"static_graph": True}},
    {"aux": "data", "ddp": False},
    {"aux": "data", "method": "mixed"},
    {"aux": "data", "scaler": True},
    {"aux": "data", "k2": True},
    {"aux": "data", "k2": True, "method": "mixed"},
    {"aux": "data", "k2": True, "micro": 2, "no_sync": True},
]


NO_SYNC = {"aux": "data", "ddp": False, "process_group": None}


@pytest.fixture(scope="module")
def results() -> list[list[dict[str, Any]]]:
    """All configurations in one pair of processes (start-up dominates the cost)."""
    return run_ranks(_configs, [*CONFIGS, NO_SYNC])


@pytest.mark.parametrize("k", range(len(CONFIGS)), ids=[str(c) for c in CONFIGS])
def test_every_rank_equals_single_process(results: list[list[dict[str, Any]]], k: int) -> None:
    config = CONFIGS[k]
    reference = train(None, 1, config)
    for rank_results in results:
        got = rank_results[k]
        assert got["steps"] == STEPS
        for a, b in zip(got["params"], reference["params"]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        if got["ema"] is not None:
            for a, b in zip(got["ema"], reference["ema"]):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # replicas are identical bit for bit, not just close
    for a, b in zip(results[0][k]["params"], results[1][k]["params"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("k", "per_step"), [(0, 1), (1, 1), (2, 1), (8, 1), (9, 1), (10, 1)])
def test_one_collective_per_step(
    results: list[list[dict[str, Any]]], k: int, per_step: int
) -> None:
    """Main and aux gradients (all K of them) travel together; a replicated aux and
    micro-batches add none."""
    assert results[0][k]["calls"] == per_step * STEPS


def test_no_sync_when_disabled(results: list[list[dict[str, Any]]]) -> None:
    """``process_group=None`` keeps local gradients: the replicas then differ (as they should)."""
    k = len(CONFIGS)
    assert results[0][k]["calls"] == 0
    assert not torch.equal(results[0][k]["params"][0], results[1][k]["params"][0])
