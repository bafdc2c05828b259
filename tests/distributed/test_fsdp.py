"""FSDP2 (``fully_shard``, DTensor gradients) on gloo/CPU, world size 2: equal to one process."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _fsdp_workers import BASELINES, STEPS, both, train
from _launch import run_ranks

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_ranks(both, str(tmp_path_factory.mktemp("fsdp_ckpt")))


@pytest.mark.parametrize("aux_kind", ["decay", "data", "levels"])
def test_fsdp2_equals_single_process(results: list[dict[str, Any]], aux_kind: str) -> None:
    reference = train(None, 1, aux_kind)
    for rank_results in results:
        got = rank_results[aux_kind]
        assert set(got["ema_types"]) == {"DTensor"}  # the EMA lives sharded with the parameter
        for a, b in zip(got["params"], reference["params"]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(got["ema"], reference["ema"]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        if reference["coef"] is not None:
            assert got["coef"] == pytest.approx(reference["coef"], rel=1e-12)


def test_fsdp2_surgery_costs_two_scalar_all_reduces_per_step(results: list[dict[str, Any]]) -> None:
    """One for the stacked inner products, one to agree on finiteness; FSDP's own are not all_reduce."""
    assert results[0]["decay"]["calls"].get("all_reduce", 0) == 2 * STEPS, results[0]["decay"][
        "calls"
    ]
    # diagnostics add none (they are read from the step's Gram matrix)
    assert results[0]["data"]["calls"].get("all_reduce", 0) == 2 * STEPS, results[0]["data"][
        "calls"
    ]
    # two aux losses: still one all_reduce for all inner products (and one for finiteness)
    assert results[0]["levels"]["calls"].get("all_reduce", 0) == 2 * STEPS, results[0]["levels"][
        "calls"
    ]


@pytest.mark.parametrize("aux_kind", ["decay", "levels"])
def test_fsdp2_sharded_state_through_dcp(results: list[dict[str, Any]], aux_kind: str) -> None:
    for rank_results in results:
        got = rank_results[aux_kind]
        assert set(got["restored_types"]) == {"DTensor"} and got["restored_step"] == STEPS
        for a, b in zip(got["restored_ema"], got["ema"]):
            assert torch.equal(a, b)


def test_fsdp2_with_grad_scaler_equals_unscaled(results: list[dict[str, Any]]) -> None:
    for rank_results in results:
        for a, b in zip(rank_results["scaled"]["params"], rank_results["decay"]["params"]):
            assert torch.equal(a, b)
        for a, b in zip(rank_results["scaled"]["ema"], rank_results["decay"]["ema"]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("method", BASELINES)
def test_fsdp2_baselines_equal_single_process(results: list[dict[str, Any]], method: str) -> None:
    """The stateless surgeons on sharded gradients: inner products summed over the mesh."""
    reference = train(None, 1, "data", method=method)
    for rank_results in results:
        for a, b in zip(rank_results[method]["params"], reference["params"]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
