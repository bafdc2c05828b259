"""Workers that run recipes of docs/production.md on real ranks."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from torchbloop import Bloop

STEPS = 3
GLOBAL_BATCH = 16


def net_and_data(rank: int, world: int) -> tuple[nn.Module, list[tuple[torch.Tensor, ...]]]:
    """The same initial net everywhere; rank ``r`` gets rows ``r::world`` of each global batch."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    g = torch.Generator().manual_seed(11)
    batches = []
    for _ in range(STEPS):
        x = torch.randn(GLOBAL_BATCH, 4, generator=g)
        y = x[:, :1].sin() + x[:, 1:2]
        batches.append((x[rank::world], y[rank::world]))
    return net, batches


def ddp_snippet(rank: int, world: int, code: str) -> dict[str, Any]:
    """Run the DDP recipe as written, under torchrun's environment variables."""
    dist.destroy_process_group()  # the launcher's group: the recipe initialises its own
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    net, loader = net_and_data(rank, world)
    namespace: dict[str, Any] = {
        "os": os,
        "torch": torch,
        "dist": dist,
        "DDP": DDP,
        "Bloop": Bloop,
        "net": net,
        "criterion": nn.functional.mse_loss,
        "loader": loader,
    }
    exec(compile(code, "docs/production.md (DDP recipe)", "exec"), namespace)
    surgeon = namespace["surgeon"]
    return {
        "params": [p.detach().clone() for p in namespace["model"].parameters()],
        "ema": [e.clone() for e in surgeon.ema],
        "steps": surgeon.step_count,
        "wrapped": type(namespace["model"]).__name__,
    }
