"""
FSDP2 (fully_shard)
===================

Shard the model with ``fully_shard`` and build the surgeon on its parameters (DTensors, which
the surgeon detects). Everything is computed on the local shards: the EMA is a DTensor sharded
like its parameter, and the inner products cost one scalar ``all_reduce`` per step (plus one for
the finiteness check). Results equal the single-process run to rounding (tested in float64).

.. note::

   In torchbloop 0.1.0 with torch 2.13 on CPU, two set-ups fail: a parameter whose first
   dimension is smaller than the world size (one rank holds an empty shard: a size error), and
   ``fully_shard`` on the root module alone (a crash inside the backward pass). Shard the
   layers, as below, with first dimensions of at least the world size. Both are reported.

This script launches itself on two CPU processes with ``torchrun`` (gloo); under ``torchrun``
(``LOCAL_RANK`` is set) it trains.
"""

import os
import subprocess
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

import torchbloop


def train():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(
        nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
    )
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    surgeon = torchbloop.Bloop(model.parameters(), lam=0.05, rho=0.05)

    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    for step in range(30):
        x = torch.randn(32, 16, generator=data)
        y = torch.stack([x[:, :4].sum(1).sin(), x[:, 4:8].sum(1).cos()], dim=1)
        main = nn.functional.mse_loss(model(x), y)
        aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
        opt.zero_grad()
        surgeon.backward(main=main, aux=aux)
        opt.step()
        if step % 10 == 9:
            aux_value = aux.full_tensor().item()  # a collective: every rank takes part
            if rank == 0:
                print(f"step {step + 1}: main {main.item():.4f}  aux {aux_value:.2f}")

    ema = surgeon.ema[0]
    local = ema.to_local()
    if rank == 0:
        print(
            f"world {world}: EMA of the first weight is a {type(ema).__name__} "
            f"{tuple(ema.shape)}, placements {ema.placements}, local shard {tuple(local.shape)}"
        )
    dist.destroy_process_group()


if "LOCAL_RANK" in os.environ:
    train()
else:
    # This file (sphinx-gallery runs a recipe from its own folder, without __file__).
    this_file = globals().get("__file__", "r05_fsdp2.py")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        this_file,
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    print(run.stdout)
    if run.returncode != 0:
        raise RuntimeError(f"torchrun failed:\n{run.stderr}")

# %%
# A ``GradScaler`` works as in one process: the overflow decision is agreed over the mesh, so
# every rank's scaler skips the same steps. Saving and loading the sharded EMA: the
# :doc:`DCP recipe <r08_checkpoint_resume_dcp>`.
