"""Workers of the DDP tests (importable by spawned ranks)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from torchbloop import Bloop, Mixed

STEPS = 4
GLOBAL_BATCH = 8


class Net(nn.Module):
    def __init__(self, unused: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.spare = nn.Linear(2, 2) if unused else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _data(step: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    xa = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    return x, x.sum(1, keepdim=True).sin(), xa, xa[:, :1].cos()


def train(rank: int | None, world: int, config: dict[str, Any]) -> dict[str, Any]:
    """Train a few steps; ``rank=None`` is the single-process run on the whole batch."""
    torch.manual_seed(0)
    net = Net(unused=config.get("unused", False)).double()
    model: nn.Module = net
    if rank is not None and config.get("ddp", True):
        model = DDP(net, **config.get("ddp_kwargs", {}))
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    cls = Mixed if config.get("method") == "mixed" else Bloop
    kwargs = {} if cls is Mixed else {"rho": 0.3}
    lam: Any = [0.5, 0.1] if config.get("k2") else 0.5
    surgeon = cls(params, lam=lam, process_group=config.get("process_group", "auto"), **kwargs)
    calls = 0
    if rank is not None:
        original = dist.all_reduce

        def counting(*args: Any, **kw: Any) -> Any:
            nonlocal calls
            calls += 1
            return original(*args, **kw)

        dist.all_reduce = counting  # type: ignore[assignment]
    micro = config.get("micro", 1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12) if config.get("scaler") else None
    try:
        for step in range(STEPS):
            x, y, xa, ya = _data(step)
            if rank is not None:
                share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
                x, y, xa, ya = x[share], y[share], xa[share], ya[share]
            opt.zero_grad()
            for k in range(micro):
                part = slice(k * len(x) // micro, (k + 1) * len(x) // micro)
                sync = (
                    model.no_sync()
                    if config.get("no_sync") and isinstance(model, DDP)
                    else contextlib.nullcontext()
                )
                with sync:
                    main = nn.functional.mse_loss(model(x[part]), y[part]) / micro
                    decay = sum(p.pow(2).sum() for p in params) / 2 / micro
                    if config["aux"] == "decay":
                        aux: Any = decay
                    else:
                        aux = nn.functional.mse_loss(model(xa[part]), ya[part]) / micro
                    if config.get("k2"):
                        aux = [aux, decay]
                    _backward(
                        surgeon,
                        main=main,
                        aux=aux,
                        accumulate=k < micro - 1,
                        aux_replicated=config["aux"] == "decay",
                        scaler=scaler,
                    )
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
    finally:
        if rank is not None:
            dist.all_reduce = original  # type: ignore[assignment]
    return {
        "params": [p.detach().clone() for p in params],
        "ema": None if cls is Mixed else [e.clone() for level in surgeon.emas for e in level],  # type: ignore[union-attr]
        "steps": surgeon.step_count,
        "calls": calls,
    }


def _backward(surgeon: Any, **kw: Any) -> None:
    surgeon.backward(**kw)


def _configs(rank: int, world: int, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [train(rank, world, c) for c in configs]
