"""FSDP2, DDP and DCP with the Table-1 methods (gloo/CPU, world size 2, real process groups).

Every method trains under ``fully_shard`` and under DDP as in one process on the whole batch
(the original Dynamic Barrier's main-loss value averaged over the ranks too), and its state
(GradVac's target cosine, MetaBalance's per-tensor norm averages, the counters and settings of
all six) goes through ``torch.distributed.checkpoint`` bit for bit: into a fresh surgeon on a
fresh sharded model, and into a plain single-process surgeon (no process group).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from _launch import run_ranks
from _methods_workers import TABLE1, full_state, model, surgeon, train

from torchbloop.distributed.checkpoint import SurgeonState

pytestmark = pytest.mark.distributed

TOL = {"rtol": 1e-12, "atol": 1e-12}


def _equal(a: Any, b: Any, where: str = "state") -> None:
    """Nested state dicts equal: tensors bit for bit, the rest by ``==``."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _close(a: Any, b: Any, where: str = "state") -> None:
    """Like :func:`_equal` with float tensors equal to 1e-12 (sums in another order)."""
    if isinstance(a, torch.Tensor) and a.is_floating_point():
        torch.testing.assert_close(a, b, **TOL, msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    else:
        _equal(a, b, where)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fsdp_methods"))


@pytest.fixture(scope="module")
def results(ckpt: str) -> list[dict[str, Any]]:
    from _methods_workers import all_methods

    return run_ranks(all_methods, ckpt)


@pytest.mark.parametrize("method", TABLE1)
def test_fsdp2_equals_single_process(results: list[dict[str, Any]], method: str) -> None:
    reference = train(None, 1, method)
    for rank_results in results:
        got = rank_results[method]
        assert got["grad_types"] == ["DTensor"]  # the surgery ran on sharded gradients
        for a, b in zip(got["params"], reference["params"]):
            torch.testing.assert_close(a, b, **TOL)
        _close(got["state"], reference["state"])
        assert got["state"]["step"] == 3
    _equal(results[0][method]["params"], results[1][method]["params"])  # replicas agree exactly


@pytest.mark.parametrize("method", TABLE1)
def test_ddp_equals_single_process(results: list[dict[str, Any]], method: str) -> None:
    reference = train(None, 1, method)
    for rank_results in results:
        got = rank_results[f"ddp_{method}"]
        for a, b in zip(got["params"], reference["params"]):
            torch.testing.assert_close(a, b, **TOL)
        _close(got["state"], reference["state"])
    _equal(results[0][f"ddp_{method}"]["params"], results[1][f"ddp_{method}"]["params"])


@pytest.mark.parametrize("method", ["gradvac", "metabalance"])
def test_the_scalar_state_is_real(results: list[dict[str, Any]], method: str) -> None:
    """The round trips below would be empty for a state that stayed at its zero start."""
    scalars = results[0][method]["state"]["scalars"]
    assert scalars and all(bool((t != 0).all()) for t in scalars.values())


@pytest.mark.parametrize("method", TABLE1)
def test_dcp_round_trip_on_two_ranks(results: list[dict[str, Any]], method: str) -> None:
    for rank_results in results:
        _equal(rank_results[method]["restored"], rank_results[method]["state"])


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
@pytest.mark.parametrize("method", TABLE1)
def test_two_rank_checkpoint_loads_into_a_plain_process(
    results: list[dict[str, Any]], ckpt: str, method: str
) -> None:
    fresh = surgeon(method, list(model(None).parameters()))
    dcp.load({"surgeon": SurgeonState(fresh)}, checkpoint_id=str(Path(ckpt) / method), no_dist=True)
    _equal(full_state(fresh), results[0][method]["state"])
