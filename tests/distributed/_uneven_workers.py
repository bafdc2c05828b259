"""Workers of the uneven-shard FSDP2 test (importable by spawned ranks)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torchbloop

STEPS = 3
METHODS = ("Bloop", "Mixed", "PCGrad")


def _model(rank: int | None, world: int) -> nn.Module:
    """The last block has ONE output row: at world 2 its weight and bias are empty on rank 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    if rank is not None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        fully_shard(model[0], mesh=mesh)
        fully_shard(model[2], mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def _data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11 + step)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    return x, x[:, :1].sin()


def train(rank: int | None, world: int, method: str) -> dict[str, Any]:
    """A few steps of ``method``; ``rank=None`` is one process on the whole batch."""
    model = _model(rank, world)
    params = list(model.parameters())
    surgeon = getattr(torchbloop, method)(params, lam=0.5)
    opt = torch.optim.SGD(params, lr=0.1)
    local_sizes = []
    for step in range(STEPS):
        x, y = _data(step)
        if rank is not None:
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        opt.zero_grad()
        main = nn.functional.mse_loss(model(x), y)
        aux = sum(p.pow(2).sum() for p in params) / 2
        surgeon.backward(main, aux)
        opt.step()
    for p in params:
        to_local = getattr(p, "to_local", None)
        local_sizes.append((to_local() if callable(to_local) else p).numel())
    full = [getattr(p, "full_tensor", lambda p=p: p)().detach().clone() for p in params]
    return {"params": full, "local_sizes": local_sizes}


def every_method(rank: int, world: int) -> dict[str, Any]:
    return {m: train(rank, world, m) for m in METHODS}
