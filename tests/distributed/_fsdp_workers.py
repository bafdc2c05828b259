"""Workers of the FSDP2 tests (importable by spawned ranks)."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn

from torchbloop import Bloop, DynamicBarrier, Mixed, PCGrad
from torchbloop.distributed.checkpoint import SurgeonState

STEPS = 3
GLOBAL_BATCH = 8


def _model(rank: int | None, world: int = 1, device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double().to(device)
    if rank is not None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(torch.device(device).type, (world,))
        fully_shard(model[0], mesh=mesh)
        fully_shard(model[2], mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def _data(step: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(7 + step)
    x = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    xa = torch.randn(GLOBAL_BATCH, 4, generator=g, dtype=torch.float64)
    return x, x[:, :2].sin(), xa, xa[:, 2:].cos()


def _full(t: torch.Tensor) -> torch.Tensor:
    full = getattr(t, "full_tensor", None)
    return (full() if callable(full) else t).detach().cpu().clone()


def train(
    rank: int | None,
    world: int,
    aux_kind: str,
    ckpt: str | None = None,
    device: str = "cpu",
    scaler: bool = False,
    method: str = "bloop",
) -> dict[str, Any]:
    """A few steps of Bloop; ``rank=None`` is the single-process run on the whole batch.

    ``aux_kind="decay"``: weight decay (parameters only; DTensor arithmetic, no diagnostics);
    ``"data"``: a loss on a second batch through the sharded model (with diagnostics).
    """
    if device == "cuda" and rank is not None:
        device = f"cuda:{rank}"
    model = _model(rank, world, device)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.5)
    lam: Any = [0.5, 0.1] if aux_kind == "levels" else 0.5
    if method == "bloop":
        surgeon: Any = Bloop(params, lam=lam, rho=0.3, diagnostics=aux_kind == "data")
    else:
        surgeon = {"mixed": Mixed, "pcgrad": PCGrad, "dynamic_barrier": DynamicBarrier}[method](
            params, lam=0.5
        )
    grad_scaler = (
        torch.amp.GradScaler(torch.device(device).type, init_scale=2.0**8) if scaler else None
    )
    calls: dict[str, int] = {}
    originals = {
        name: getattr(dist, name)
        for name in ("all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor")
    }

    def counter(name: str) -> Any:
        def wrapped(*args: Any, **kw: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return originals[name](*args, **kw)

        return wrapped

    if rank is not None:
        for name in originals:
            setattr(dist, name, counter(name))
    try:
        for step in range(STEPS):
            x, y, xa, ya = _data(step)
            if rank is not None:
                share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
                x, y, xa, ya = x[share], y[share], xa[share], ya[share]
            x, y, xa, ya = x.to(device), y.to(device), xa.to(device), ya.to(device)
            opt.zero_grad()
            main = nn.functional.mse_loss(model(x), y)
            decay = sum(p.pow(2).sum() for p in params) / 2
            if aux_kind == "decay":
                aux: Any = decay
            else:
                aux = nn.functional.mse_loss(model(xa), ya)
            if aux_kind == "levels":  # two aux losses in priority order
                aux = [aux, decay]
            surgeon.backward(main=main, aux=aux, scaler=grad_scaler)
            if grad_scaler is None:
                opt.step()
            else:
                grad_scaler.step(opt)
                grad_scaler.update()
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    out: dict[str, Any] = {"params": [_full(p) for p in params], "calls": calls}
    if method != "bloop":
        return out
    assert surgeon.emas is not None
    out["ema"] = [_full(e) for level in surgeon.emas for e in level]
    out["ema_types"] = [type(e).__name__ for level in surgeon.emas for e in level]
    out["coef"] = None if surgeon.diagnostics is None else float(surgeon.diagnostics.coef)
    if ckpt is not None and rank is not None:
        dcp.save({"surgeon": SurgeonState(surgeon)}, checkpoint_id=ckpt)
        fresh = Bloop(list(_model(rank, world, device).parameters()), lam=lam, rho=0.3)
        dcp.load({"surgeon": SurgeonState(fresh)}, checkpoint_id=ckpt)
        assert fresh.emas is not None
        out["restored_ema"] = [_full(e) for level in fresh.emas for e in level]
        out["restored_types"] = [type(e).__name__ for level in fresh.emas for e in level]
        out["restored_step"] = fresh.step_count
    return out


BASELINES = ("mixed", "pcgrad", "dynamic_barrier")


def both(rank: int, world: int, ckpt: str, device: str = "cpu") -> dict[str, Any]:
    return {
        "decay": train(rank, world, "decay", ckpt, device),
        "data": train(rank, world, "data", device=device),
        "scaled": train(rank, world, "decay", device=device, scaler=True),
        "levels": train(rank, world, "levels", ckpt + "-levels", device),
        **{m: train(rank, world, "data", device=device, method=m) for m in BASELINES},
    }
