"""Workers of the resharding test: FSDP2 training saved at one world size, resumed at another."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful

from torchbloop import Bloop
from torchbloop.distributed.checkpoint import SurgeonState

GLOBAL_BATCH = 8


class TrainState(Stateful):
    """Model and optimizer for DCP, as in docs/production.md."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.model, self.opt = model, opt

    def state_dict(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        set_state_dict(
            self.model, self.opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"]
        )


def build(world: int | None) -> tuple[nn.Module, torch.optim.Optimizer, Bloop]:
    """Model, optimizer and surgeon; FSDP2 over ``world`` ranks, or plain with ``world=None``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    if world is not None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        fully_shard(model[0], mesh=mesh)
        fully_shard(model[2], mesh=mesh)
        fully_shard(model, mesh=mesh)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.5)
    return model, opt, Bloop(params, lam=0.5, rho=0.3)


def train_steps(
    model: nn.Module, opt: torch.optim.Optimizer, surgeon: Bloop, steps: range, share: slice
) -> None:
    for step in steps:
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
        xa = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
        y, ya = x[:, :3].sin(), xa[:, 1:].cos()
        opt.zero_grad()
        main = nn.functional.mse_loss(model(x[share]), y[share])
        aux = nn.functional.mse_loss(model(xa[share]), ya[share])
        surgeon.backward(main=main, aux=aux)
        opt.step()


def _full(t: torch.Tensor) -> torch.Tensor:
    full = getattr(t, "full_tensor", None)
    return (full() if callable(full) else t).detach().clone()


def snapshot(model: nn.Module, surgeon: Bloop) -> dict[str, Any]:
    assert surgeon.ema is not None
    return {
        "params": [_full(p) for p in model.parameters()],
        "ema": [_full(e) for e in surgeon.ema],
        "ema_types": sorted({type(e).__name__ for e in surgeon.ema}),
        "step": surgeon.step_count,
    }


def resume_train_save(
    rank: int, world: int, load_from: str | None, steps: tuple[int, int], save_to: str
) -> dict[str, Any]:
    """(Load a checkpoint,) train ``range(*steps)`` on this world size, save; what it saw."""
    model, opt, surgeon = build(world)
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    out: dict[str, Any] = {}
    if load_from is not None:
        dcp.load(
            {"train": TrainState(model, opt), "surgeon": SurgeonState(surgeon)},
            checkpoint_id=load_from,
        )
        out["loaded"] = snapshot(model, surgeon)
    train_steps(model, opt, surgeon, range(*steps), share)
    out["trained"] = snapshot(model, surgeon)
    dcp.save(
        {"train": TrainState(model, opt), "surgeon": SurgeonState(surgeon)}, checkpoint_id=save_to
    )
    return out
