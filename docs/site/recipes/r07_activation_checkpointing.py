"""
Activation checkpointing
========================

Activation checkpointing (``torch.utils.checkpoint``) recomputes a block's forward during the
backward pass instead of storing its activations. The surgeon runs one backward pass per loss,
so a checkpointed block is recomputed for each loss that reaches it; the direction is the same
as without checkpointing. Use the non-reentrant implementation (``use_reentrant=False``, the
one PyTorch recommends).
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import torchbloop


class Net(nn.Module):
    def __init__(self, checkpointed):
        super().__init__()
        self.checkpointed = checkpointed
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.GELU()) for _ in range(4))
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        for block in self.blocks:
            if self.checkpointed:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(x)


def one_step(checkpointed):
    torch.manual_seed(0)
    model = Net(checkpointed).double()
    surgeon = torchbloop.Bloop(model.parameters(), lam=0.3)
    x, y = torch.randn(16, 32, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    for _ in range(3):  # a few steps, so that the EMA differs from the first gradient
        main = nn.functional.mse_loss(model(x), y)
        aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
        surgeon.backward(main=main, aux=aux)
    return [p.grad.clone() for p in model.parameters()]


plain, checkpointed = one_step(False), one_step(True)
error = max((a - b).abs().max().item() for a, b in zip(plain, checkpointed))
print(f"direction with checkpointing vs without: largest difference {error:.1e}")
assert error < 1e-12

# %%
# The cost: each checkpointed block runs its forward once more for every loss whose backward
# pass reaches it, so up to twice per step with a main and an auxiliary loss (the auxiliary
# loss above depends on the parameters only and never reaches the activations).
