"""DCP checkpoints of every method of the method table: a run interrupted and resumed through
``torch.distributed.checkpoint`` (model, optimizer and ``SurgeonState``) equals the uninterrupted
run bit for bit, scalar state included (GradVac's target cosine, MetaBalance's per-tensor
norm averages); a checkpoint taken before the first step restores the zero start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful

from torchbloop.distributed.checkpoint import SurgeonState
from torchbloop.methods import METHODS

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


class TrainState(Stateful):
    """Model and optimizer for DCP (as in ``test_resume.py`` and docs/production.md)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.model, self.opt = model, opt

    def state_dict(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        set_state_dict(
            self.model, self.opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"]
        )


def _fresh(method: str) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    info = METHODS[method]
    kwargs: dict[str, Any] = {"lam": 0.2} if info.takes_lam else {}
    if method == "gradvac":
        kwargs["beta"] = 0.5  # the target cosine moves visibly in a few steps
    return model, opt, info.factory(model.parameters(), **kwargs)


def _train(model: nn.Module, opt: torch.optim.Optimizer, surgeon: Any, steps: range) -> None:
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x, xa = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)
        y = torch.randint(0, 2, (16,), generator=g)
        opt.zero_grad()
        main = nn.functional.cross_entropy(model(x), y)
        aux = model(xa).pow(2).mean()  # a second batch: conflicts with the main loss at times
        surgeon.backward(main=main, aux=aux)
        opt.step()


def _same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("method", list(METHODS))
def test_dcp_resume_equals_uninterrupted(tmp_path: Path, method: str) -> None:
    whole = _fresh(method)
    _train(*whole, range(5))
    first = _fresh(method)
    _train(*first, range(2))
    dcp.save(
        {"train": TrainState(*first[:2]), "surgeon": SurgeonState(first[2])}, checkpoint_id=tmp_path
    )
    resumed = _fresh(method)
    dcp.load(
        {"train": TrainState(*resumed[:2]), "surgeon": SurgeonState(resumed[2])},
        checkpoint_id=tmp_path,
    )
    _same(resumed[2].state_dict(), first[2].state_dict(), "restored")
    _train(*resumed, range(2, 5))
    for p, q in zip(whole[0].parameters(), resumed[0].parameters()):
        assert torch.equal(p, q)
    _same(resumed[2].state_dict(), whole[2].state_dict(), "after resuming")


@pytest.mark.parametrize("method", ["gradvac", "metabalance"])
def test_dcp_before_the_first_step_restores_the_zero_start(tmp_path: Path, method: str) -> None:
    _, _, surgeon = _fresh(method)
    dcp.save({"surgeon": SurgeonState(surgeon)}, checkpoint_id=tmp_path)
    resumed = _fresh(method)
    _train(*resumed, range(2))
    trained = resumed[2].state_dict()["scalars"]
    assert all(bool((t != 0).all()) for t in trained.values())
    dcp.load({"surgeon": SurgeonState(resumed[2])}, checkpoint_id=tmp_path)
    _same(resumed[2].state_dict(), surgeon.state_dict())
