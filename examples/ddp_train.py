"""Bloop with DistributedDataParallel on CPU (gloo): the single-process lines, unchanged.

Run on two processes:

    torchrun --nproc_per_node=2 examples/ddp_train.py
    torchrun --nproc_per_node=2 examples/ddp_train.py --steps 20   # a quick smoke run

or as one process (``python examples/ddp_train.py``). The main loss is a regression on the
rank's shard of the data; the auxiliary loss is weight decay, identical on every rank, so it is
declared ``aux_replicated=True`` and costs no communication. The surgeon averages the main
gradients over the ranks in one all-reduce per step, so every rank ends with the same
parameters and the same EMA; the script checks it. The forward and the surgeon's backward run
under ``model.no_sync()``: the surgeon's backward passes are ordinary ``Tensor.backward`` calls,
and without ``no_sync`` DDP would all-reduce the main gradient a second time (harmless, but
wasted communication).
"""

from __future__ import annotations

import argparse
import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from torchbloop import Bloop


def make_data(n: int = 1024) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :3].sum(1, keepdim=True)).sin() + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def checksum(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach().double().sum() for t in tensors])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument(
        "--lam", type=float, default=0.01, help="weight of the projected aux gradient"
    )
    args = parser.parse_args()

    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(0)  # same initial weights everywhere (DDP also broadcasts rank 0's)

    net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    model = DDP(net) if distributed else net
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    surgeon = Bloop(model.parameters(), lam=args.lam, rho=0.05)  # averages over the ranks itself

    data = make_data()
    sampler = DistributedSampler(data, shuffle=True, seed=0) if distributed else None
    loader = DataLoader(
        data, batch_size=64 // world, sampler=sampler, shuffle=sampler is None, drop_last=True
    )

    step, epoch = 0, 0
    while step < args.steps:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            with model.no_sync() if distributed else contextlib.nullcontext():
                main_loss = nn.functional.mse_loss(model(x), y)
                aux_loss = sum(p.pow(2).sum() for p in model.parameters()) / 2
                surgeon.backward(main=main_loss, aux=aux_loss, aux_replicated=True)
            opt.step()
            step += 1
            if rank == 0 and (step % 50 == 0 or step == 1):
                print(f"step {step:4d}  main {main_loss.item():.4f}  aux {aux_loss.item():.2f}")
            if step >= args.steps:
                break
        epoch += 1

    sums = checksum(list(model.parameters()) + (surgeon.ema or []))
    if distributed:
        gathered = [torch.zeros_like(sums) for _ in range(world)]
        dist.all_gather(gathered, sums)
        same = all(torch.equal(gathered[0], g) for g in gathered)
        if rank == 0:
            print(f"world {world}: parameters and EMA identical on every rank: {same}")
        dist.destroy_process_group()
        if not same:
            raise SystemExit("replicas diverged")
    else:
        print("single process: done")


if __name__ == "__main__":
    main()
