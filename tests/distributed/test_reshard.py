"""Resharding a checkpoint: FSDP2 at world size 2 -> 1 -> 2 (and into a plain process) via DCP.

``SurgeonState`` saves the sharded EMA shard by shard; DCP reshards on load, so a run saved on
two ranks resumes on one (and back) and ends where the uninterrupted single-process run ends.
The two-rank -> plain-process case runs in the default suite; the 2 -> 1 -> 2 cycle (three
launches, ~30 s on two cores) is marked slow.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from _launch import run_ranks
from _reshard_workers import TrainState, build, resume_train_save, snapshot, train_steps

from torchbloop.distributed.checkpoint import SurgeonState

pytestmark = pytest.mark.distributed

TOL = {"rtol": 1e-12, "atol": 1e-12}
ALL = slice(None)


def _close(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got["step"] == expected["step"]
    for key in ("params", "ema"):
        assert len(got[key]) == len(expected[key])
        for a, b in zip(got[key], expected[key]):
            torch.testing.assert_close(a, b, **TOL)


def _reference(steps: int) -> dict[str, Any]:
    model, opt, surgeon = build(None)
    train_steps(model, opt, surgeon, range(steps), ALL)
    return snapshot(model, surgeon)


@pytest.fixture(scope="module")
def world2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three steps on two ranks, saved."""
    path = str(tmp_path_factory.mktemp("reshard") / "a")
    return {"path": path, "ranks": run_ranks(resume_train_save, None, (0, 3), path, world=2)}


@pytest.fixture(scope="module")
def runs(world2: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Then two steps on one rank (loaded from the two-rank checkpoint), then two on two again."""
    tmp = tmp_path_factory.mktemp("reshard_more")
    b, c = str(tmp / "b"), str(tmp / "c")
    return {
        "world2": world2["ranks"],
        "world1": run_ranks(resume_train_save, world2["path"], (3, 5), b, world=1),
        "world2_again": run_ranks(resume_train_save, b, (5, 7), c, world=2),
    }


@pytest.mark.slow
def test_saved_at_two_ranks_loads_at_one(runs: dict[str, Any]) -> None:
    saved = runs["world2"][0]["trained"]
    _close(saved, _reference(3))
    assert saved["ema_types"] == ["DTensor"]
    loaded = runs["world1"][0]["loaded"]
    assert loaded["ema_types"] == ["DTensor"]
    _close(loaded, saved)


@pytest.mark.slow
def test_saved_at_one_rank_loads_at_two(runs: dict[str, Any]) -> None:
    saved = runs["world1"][0]["trained"]
    _close(saved, _reference(5))
    for rank in runs["world2_again"]:
        _close(rank["loaded"], saved)


@pytest.mark.slow
def test_resharded_run_equals_the_uninterrupted_run(runs: dict[str, Any]) -> None:
    reference = _reference(7)
    for rank in runs["world2_again"]:
        _close(rank["trained"], reference)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
def test_sharded_checkpoint_loads_into_a_plain_process(world2: dict[str, Any]) -> None:
    """No process group, no FSDP: the world-2 checkpoint restores a plain model and surgeon."""
    saved = world2["ranks"][0]["trained"]
    _close(saved, _reference(3))
    model, opt, surgeon = build(None)
    dcp.load(
        {"train": TrainState(model, opt), "surgeon": SurgeonState(surgeon)},
        checkpoint_id=world2["path"],
        no_dist=True,
    )
    loaded = snapshot(model, surgeon)
    assert loaded["ema_types"] == ["Tensor"]
    _close(loaded, saved)
    train_steps(model, opt, surgeon, range(3, 7), ALL)  # and trains on as if never interrupted
    _close(snapshot(model, surgeon), _reference(7))
