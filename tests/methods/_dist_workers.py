"""Worker of ``test_distributed``: the Table-1 surgeons trained on data split over ranks.

A module of its own (not the test file) so that ``torch.multiprocessing.spawn`` can import it by
name in the spawned ranks.
"""

from __future__ import annotations

from typing import Any

import torch

from torchbloop.surgeons.agem import AGEM
from torchbloop.surgeons.cosine_gating import CosineGating
from torchbloop.surgeons.gradvac import GradVac
from torchbloop.surgeons.metabalance import MetaBalance
from torchbloop.surgeons.mgda import MGDA
from torchbloop.surgeons.original_dynamic_barrier import OriginalDynamicBarrier

BUILDERS: dict[str, Any] = {
    "agem": lambda ps: AGEM(ps, lam=0.5),
    "mgda": lambda ps: MGDA(ps, lam=0.5),
    "cosine_gating": lambda ps: CosineGating(ps, lam=0.5),
    "gradvac": lambda ps: GradVac(ps, lam=0.5, beta=0.5),
    "original_dynamic_barrier": lambda ps: OriginalDynamicBarrier(ps, alpha=0.5, beta=2.0),
    "metabalance": lambda ps: MetaBalance(ps, r=0.7, beta=0.5),
}

STEPS = 3
BATCH = 16


def _data(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(BATCH, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(BATCH, 1, generator=gen, dtype=torch.float64)
    z = torch.randn(BATCH, 1, generator=gen, dtype=torch.float64)
    return x, y, z


def train(rank: int, world: int, name: str, micro: int) -> list[torch.Tensor]:
    """``STEPS`` steps of SGD on rank ``rank``'s share of each batch (``world = 1``: all of it),
    in ``micro`` accumulated micro-batches; returns the parameters."""
    gen = torch.Generator().manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(5, 4, generator=gen, dtype=torch.float64) * 0.5)
    w2 = torch.nn.Parameter(torch.randn(4, 1, generator=gen, dtype=torch.float64) * 0.5)
    ps = [w1, w2]
    surgeon = BUILDERS[name](ps)
    opt = torch.optim.SGD(ps, lr=0.1)
    share = BATCH // world
    for step in range(STEPS):
        x, y, z = (t[rank * share : (rank + 1) * share] for t in _data(step))
        opt.zero_grad()
        part = share // micro
        for j in range(micro):
            sl = slice(j * part, (j + 1) * part)
            out = torch.tanh(x[sl] @ w1) @ w2
            main = ((out - y[sl]) ** 2).mean() / micro
            aux = ((out - z[sl]) ** 2).mean() / micro
            surgeon.backward(main, aux, accumulate=j < micro - 1)
        opt.step()
    return [p.detach().clone() for p in ps]


def run_all(rank: int, world: int) -> dict[tuple[str, int], list[torch.Tensor]]:
    """Every method, whole batches and two micro-batches, in one pair of processes."""
    return {(name, micro): train(rank, world, name, micro) for name in BUILDERS for micro in (1, 2)}
