"""FSDP2 with a parameter that has fewer rows than ranks: empty local shards take part.

At world size 2 a ``Linear(8, 1)`` block leaves rank 1 with an empty weight and bias shard;
its inner products are zero and the sums over the mesh still equal one process's.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _launch import run_ranks
from _uneven_workers import METHODS, every_method, train

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return run_ranks(every_method)


def test_a_rank_holds_empty_shards(results: list[dict[str, Any]]) -> None:
    sizes = results[1]["Bloop"]["local_sizes"]
    assert 0 in sizes and sum(sizes) > 0


@pytest.mark.parametrize("method", METHODS)
def test_uneven_shards_equal_single_process(results: list[dict[str, Any]], method: str) -> None:
    reference = train(None, 1, method)
    for rank_results in results:
        for a, b in zip(rank_results[method]["params"], reference["params"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
