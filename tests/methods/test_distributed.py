"""Data parallelism (gloo, world size 2, CPU): every Table-1 surgeon, on each rank's half of the
batch, trains exactly as one process on the whole batch (gradients averaged over the ranks by
the surgeon; for the original Dynamic Barrier the main loss value too), with and without
micro-batch accumulation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_DIST = str(Path(__file__).resolve().parents[1] / "distributed")
if _DIST not in sys.path:
    sys.path.insert(0, _DIST)

from _dist_workers import BUILDERS, run_all, train  # noqa: E402
from _launch import run_ranks  # noqa: E402

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def ranks():
    """All runs in one pair of processes (start-up dominates the cost)."""
    return run_ranks(run_all)


@pytest.mark.parametrize("micro", [1, 2], ids=["whole", "two-micro-batches"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_two_ranks_equal_one_process(ranks, name, micro):
    reference = train(0, 1, name, micro)
    for rank_results in ranks:
        for a, b in zip(rank_results[name, micro], reference):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    for a, b in zip(ranks[0][name, micro], ranks[1][name, micro]):
        assert torch.equal(a, b)  # the replicas agree bit for bit
