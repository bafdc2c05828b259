"""Workers of the FSDP2 / DCP tests of the Table-1 methods (importable by spawned ranks).

Each method of the method table that the older FSDP2 tests do not cover (A-GEM, MGDA, cosine
gating, GradVac, MetaBalance, the original Dynamic Barrier) trains a few steps on a model under
``fully_shard`` (world size 2, each rank on its half of the batch), then saves its state with
``torch.distributed.checkpoint`` through :class:`SurgeonState` and loads it into a fresh
surgeon on a fresh sharded model. ``rank=None`` is the single-process run on the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from torchbloop.distributed.checkpoint import SurgeonState
from torchbloop.methods import METHODS

STEPS = 3
GLOBAL_BATCH = 8
LAM = 0.5
TABLE1 = ("agem", "mgda", "cosine_gating", "gradvac", "metabalance", "original_dynamic_barrier")


def model(rank: int | None, world: int = 1, wrap: str = "fsdp") -> nn.Module:
    """The model; on a rank under ``fully_shard`` (``wrap="fsdp"``) or DDP (``"ddp"``)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    if rank is not None and wrap == "ddp":
        return nn.parallel.DistributedDataParallel(net)
    if rank is not None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        fully_shard(net[0], mesh=mesh)
        fully_shard(net[2], mesh=mesh)
        fully_shard(net, mesh=mesh)
    return net


def surgeon(method: str, params: list[torch.Tensor]) -> Any:
    info = METHODS[method]
    if method == "gradvac":  # a large beta: the target cosine moves visibly in a few steps
        return info.factory(params, lam=LAM, beta=0.5)
    return info.factory(params, **({"lam": LAM} if info.takes_lam else {}))


def _data(step: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(70 + step)
    x = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    xa = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    return x, x[:, :2].sin(), xa, -xa[:, 1:3].cos()


def _full(t: Any) -> Any:
    if isinstance(t, dict):
        return {k: _full(v) for k, v in t.items()}
    if isinstance(t, list):
        return [_full(v) for v in t]
    if not isinstance(t, torch.Tensor):
        return t
    full = getattr(t, "full_tensor", None)
    return (full() if callable(full) else t).detach().cpu().clone()


def full_state(s: Any) -> dict[str, Any]:
    """The surgeon's state dict with every (sharded) tensor gathered whole."""
    return _full(s.state_dict())  # type: ignore[no-any-return]


def train(
    rank: int | None, world: int, method: str, ckpt: str | None = None, wrap: str = "fsdp"
) -> dict[str, Any]:
    """``STEPS`` steps of SGD with momentum; the parameters and the surgeon's state; with
    ``ckpt`` (ranks only) the state saved with DCP and what a fresh surgeon loads back."""
    net = model(rank, world, wrap)
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.5)
    s = surgeon(method, params)
    for step in range(STEPS):
        x, y, xa, ya = _data(step)
        if rank is not None:
            share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
            x, y, xa, ya = x[share], y[share], xa[share], ya[share]
        opt.zero_grad()
        main = nn.functional.mse_loss(net(x), y)
        aux = nn.functional.mse_loss(net(xa), ya)
        s.backward(main=main, aux=aux)
        opt.step()
    out: dict[str, Any] = {
        "params": [_full(p) for p in params],
        "grad_types": sorted({type(p.grad).__name__ for p in params}),
        "state": full_state(s),
    }
    if ckpt is not None:
        dcp.save({"surgeon": SurgeonState(s)}, checkpoint_id=ckpt)
        fresh = surgeon(method, list(model(rank, world).parameters()))
        dcp.load({"surgeon": SurgeonState(fresh)}, checkpoint_id=ckpt)
        out["restored"] = full_state(fresh)
    return out


def all_methods(rank: int, world: int, ckpt: str) -> dict[str, Any]:
    out = {m: train(rank, world, m, f"{ckpt}/{m}") for m in TABLE1}
    out.update({f"ddp_{m}": train(rank, world, m, wrap="ddp") for m in TABLE1})
    return out
