"""Checkpoints: a run interrupted and resumed equals the uninterrupted run, bit for bit (CPU)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful

from torchbloop import Bloop, Mixed
from torchbloop.distributed.checkpoint import SurgeonState

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


class TrainState(Stateful):
    """Model and optimizer for DCP (the recipe of docs/production.md)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.model, self.opt = model, opt

    def state_dict(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_state_dict(
            self.model,
            self.opt,
            model_state_dict=state_dict["model"],
            optim_state_dict=state_dict["optim"],
        )


def _fresh(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.optim.Optimizer, Bloop]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2)).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, Bloop(model.parameters(), lam=0.2, rho=0.1, ema_order="code")


def _train(model: nn.Module, opt: torch.optim.Optimizer, surgeon: Bloop, steps: range) -> None:
    dtype = next(model.parameters()).dtype
    for step in steps:
        g = torch.Generator().manual_seed(step)
        x = torch.randn(16, 6, generator=g).to(dtype)
        y = torch.randint(0, 2, (16,), generator=g)
        opt.zero_grad()
        main = nn.functional.cross_entropy(model(x).float(), y)
        aux = sum(p.float().pow(2).sum() for p in model.parameters())
        surgeon.backward(main=main, aux=aux)
        opt.step()


def _assert_same(a: tuple[nn.Module, torch.optim.Optimizer, Bloop], b: tuple[Any, ...]) -> None:
    for p, q in zip(a[0].parameters(), b[0].parameters()):
        assert torch.equal(p, q)
    for sa, sb in zip(a[1].state.values(), b[1].state.values()):
        for k in sa:
            assert torch.equal(sa[k], sb[k])
    assert a[2].ema is not None and b[2].ema is not None
    for e, f in zip(a[2].ema, b[2].ema):
        assert e.dtype == f.dtype and torch.equal(e, f)
    assert a[2].step_count == b[2].step_count


@pytest.mark.parametrize("stop", [1, 3])
def test_dcp_resume_equals_uninterrupted(tmp_path: Path, stop: int) -> None:
    whole = _fresh()
    _train(*whole, range(6))

    first = _fresh()
    _train(*first, range(stop))
    dcp.save(
        {"train": TrainState(*first[:2]), "surgeon": SurgeonState(first[2])}, checkpoint_id=tmp_path
    )

    resumed = _fresh()
    dcp.load(
        {"train": TrainState(*resumed[:2]), "surgeon": SurgeonState(resumed[2])},
        checkpoint_id=tmp_path,
    )
    assert resumed[2].step_count == stop
    _train(*resumed, range(stop, 6))
    _assert_same(whole, resumed)


def test_torch_save_resume_equals_uninterrupted() -> None:
    whole = _fresh()
    _train(*whole, range(5))
    first = _fresh()
    _train(*first, range(2))
    buffer = io.BytesIO()
    torch.save(
        {
            "model": first[0].state_dict(),
            "opt": first[1].state_dict(),
            "bloop": first[2].state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = _fresh()
    resumed[0].load_state_dict(saved["model"])
    resumed[1].load_state_dict(saved["opt"])
    resumed[2].load_state_dict(saved["bloop"])
    _train(*resumed, range(2, 5))
    _assert_same(whole, resumed)


def test_dcp_keeps_a_float32_ema_for_bf16_parameters(tmp_path: Path) -> None:
    model, opt, surgeon = _fresh(torch.bfloat16)
    _train(model, opt, surgeon, range(2))
    dcp.save({"surgeon": SurgeonState(surgeon)}, checkpoint_id=tmp_path)
    fresh = Bloop(model.parameters(), lam=0.2, rho=0.1, ema_order="code")
    dcp.load({"surgeon": SurgeonState(fresh)}, checkpoint_id=tmp_path)
    assert fresh.ema is not None and surgeon.ema is not None
    for e, f in zip(fresh.ema, surgeon.ema):
        assert e.dtype == torch.float32 and torch.equal(e, f)


def test_dcp_before_the_first_step_restores_no_ema(tmp_path: Path) -> None:
    """(A fresh *optimizer* is another matter: DCP's get_state_dict steps it once to build state.)"""
    _, _, surgeon = _fresh()
    dcp.save({"surgeon": SurgeonState(surgeon)}, checkpoint_id=tmp_path)
    resumed = _fresh()
    _train(*resumed, range(1))
    dcp.load({"surgeon": SurgeonState(resumed[2])}, checkpoint_id=tmp_path)
    assert resumed[2].ema is None and resumed[2].step_count == 0


def test_dcp_stateless_surgeon(tmp_path: Path) -> None:
    w = nn.Parameter(torch.ones(2))
    surgeon = Mixed([w], lam=0.5)
    surgeon.backward(main=w.sum(), aux=w.pow(2).sum())
    dcp.save({"surgeon": SurgeonState(surgeon)}, checkpoint_id=tmp_path)
    fresh = Mixed([w], lam=0.1)
    dcp.load({"surgeon": SurgeonState(fresh)}, checkpoint_id=tmp_path)
    assert (fresh.step_count, fresh.lam) == (1, 0.5)


def test_dcp_rejects_a_checkpoint_of_another_method(tmp_path: Path) -> None:
    w = nn.Parameter(torch.ones(2))
    dcp.save({"surgeon": SurgeonState(Mixed([w], lam=0.5))}, checkpoint_id=tmp_path)
    with pytest.raises(CheckpointException, match="rho"):
        dcp.load({"surgeon": SurgeonState(Bloop([w], lam=0.5))}, checkpoint_id=tmp_path)


@pytest.mark.parametrize("order", ["paper", "code"])
def test_dcp_resume_with_three_levels(tmp_path: Path, order: str) -> None:
    """K = 3 aux losses: every level's EMA travels through SurgeonState; resume is bit-identical."""

    def make() -> tuple[nn.Module, torch.optim.Optimizer, Bloop]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 2))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        surgeon = Bloop(
            model.parameters(), lam=[0.2, 0.1, 0.05], rho=[0.1, 0.2, 0.3], ema_order=order
        )
        return model, opt, surgeon

    def train(state: tuple[nn.Module, torch.optim.Optimizer, Bloop], steps: range) -> None:
        model, opt, surgeon = state
        for step in steps:
            g = torch.Generator().manual_seed(step)
            x = torch.randn(16, 6, generator=g)
            y = torch.randint(0, 2, (16,), generator=g)
            opt.zero_grad()
            out = model(x)
            main = nn.functional.cross_entropy(out, y)
            aux = [
                sum(p.pow(2).sum() for p in model.parameters()),
                out.pow(2).mean(),
                model[0].weight.abs().sum(),
            ]
            surgeon.backward(main=main, aux=aux)
            opt.step()

    whole = make()
    train(whole, range(4))
    first = make()
    train(first, range(2))
    dcp.save(
        {"train": TrainState(first[0], first[1]), "surgeon": SurgeonState(first[2])},
        checkpoint_id=tmp_path,
    )
    resumed = make()
    dcp.load(
        {"train": TrainState(resumed[0], resumed[1]), "surgeon": SurgeonState(resumed[2])},
        checkpoint_id=tmp_path,
    )
    assert resumed[2].rho == (0.1, 0.2, 0.3) and resumed[2].step_count == 2
    train(resumed, range(2, 4))
    for p, q in zip(whole[0].parameters(), resumed[0].parameters()):
        assert torch.equal(p, q)
    assert whole[2].emas is not None and resumed[2].emas is not None
    assert len(resumed[2].emas) == 3
    for level_a, level_b in zip(whole[2].emas, resumed[2].emas):
        for e, f in zip(level_a, level_b):
            assert torch.equal(e, f)
