"""A model with an activation-checkpointed segment, trained by a surgeon (in one process or on ranks).

Shared by ``tests/surgeons/test_checkpointing.py`` (single process, and DDP through the
launcher) so that the checkpointed and the plain runs build exactly the same model.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from torchbloop import Bloop, DynamicBarrier, Mixed, PCGrad

STEPS = 3
GLOBAL_BATCH = 8

SURGEONS = {
    "bloop_paper": lambda ps: Bloop(ps, lam=0.5, rho=0.3, ema_order="paper"),
    "bloop_code": lambda ps: Bloop(ps, lam=0.5, rho=0.3, ema_order="code"),
    "mixed": lambda ps: Mixed(ps, lam=0.5),
    "pcgrad": lambda ps: PCGrad(ps, lam=0.5),
    "dynamic_barrier": lambda ps: DynamicBarrier(ps, lam=0.5),
}

MODES = ("reentrant", "non_reentrant")
"""How the segment is checkpointed (``use_reentrant=True``/``False``); ``None`` is not at all."""


class Net(nn.Module):
    """``Linear -> tanh -> [Linear, tanh, Linear, tanh] -> Linear``, the bracket checkpointed."""

    def __init__(self, mode: str | None) -> None:
        super().__init__()
        self.mode = mode
        self.inp = nn.Linear(4, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        if self.mode is None:
            h = self.block(h)
        else:
            h = checkpoint(self.block, h, use_reentrant=self.mode == "reentrant")
        return self.out(h)


def data(step: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(50 + step)
    x = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    xa = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    return x, torch.cat([x[:, :1].sin(), x[:, 1:2] * x[:, 2:3]], 1), xa, xa[:, 2:].cos()


def losses(
    model: nn.Module, batch: tuple[torch.Tensor, ...], aux_kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``aux_kind``: "data" (a second batch, a second forward through the checkpointed segment),
    or "shared" (a penalty on the main forward's own output: both losses share one graph)."""
    x, y, xa, ya = batch
    out = model(x)
    main = nn.functional.mse_loss(out, y)
    if aux_kind == "data":
        aux = nn.functional.mse_loss(model(xa), ya)
    else:
        aux = out.pow(2).mean() + sum(p.pow(2).sum() for p in model.parameters()) / 100
    return main, aux


def train(
    surgeon_name: str,
    mode: str | None,
    aux_kind: str,
    rank: int | None = None,
    world: int = 1,
) -> dict[str, Any]:
    """A few steps; the direction of every step, the final parameters and state.

    ``.grad`` is never zeroed: the surgeon replaces it (checked against the same rule in the
    plain run). With ``rank`` the model is wrapped in DDP and trained on the rank's share.
    """
    torch.manual_seed(0)
    net = Net(mode).double()
    model: nn.Module = net
    if rank is not None:
        model = nn.parallel.DistributedDataParallel(net)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.5)
    surgeon = SURGEONS[surgeon_name](params)
    directions = []
    for step in range(STEPS):
        batch = data(step)
        if rank is not None:
            share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
            batch = tuple(t[share] for t in batch)
        main, aux = losses(model, batch, aux_kind)
        surgeon.backward(main=main, aux=aux)
        directions.append([None if p.grad is None else p.grad.detach().clone() for p in params])
        opt.step()
    ema = getattr(surgeon, "ema", None)
    return {
        "directions": directions,
        "params": [p.detach().clone() for p in params],
        "ema": None if ema is None else [e.detach().clone() for e in ema],
        "steps": surgeon.step_count,
    }


def train_all_ddp(rank: int, world: int, configs: list[tuple[str, str, str]]) -> list[Any]:
    """Every configuration on this rank; an exception is returned as text (one config's failure
    must not hide the others' results)."""
    out: list[Any] = []
    for surgeon_name, mode, aux_kind in configs:
        try:
            out.append(train(surgeon_name, mode, aux_kind, rank, world))
        except Exception:
            out.append(traceback.format_exc())
    return out
