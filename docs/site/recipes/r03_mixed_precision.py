"""
Mixed precision: GradScaler and bf16 autocast
=============================================

**float16 with a GradScaler.** Pass the *unscaled* losses and the scaler to
``surgeon.backward``, then ``scaler.step(opt)`` and ``scaler.update()`` as usual. The surgeon
differentiates the scaled losses (no underflow), unscales before the EMA and the inner products
see the gradients, and writes the scaled direction into ``.grad`` for ``scaler.step`` to
unscale. An overflow step leaves the surgeon's state untouched and the scaler skips it.

**bfloat16 autocast** needs no scaler. Inner products are accumulated in float32 and the EMA
is float32 whatever the autocast dtype (also for bfloat16 *parameters*).

On a GPU use ``"cuda"`` in both places; the CPU autocast used here makes the recipe runnable
anywhere.
"""

import torch
from torch import nn

import torchbloop

torch.manual_seed(0)
x, y = torch.randn(256, 8), torch.randn(256, 1)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
surgeon = torchbloop.Bloop(model.parameters(), lam=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)

for _ in range(20):
    idx = torch.randint(0, 256, (32,))
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        main = nn.functional.mse_loss(model(x[idx]).float(), y[idx])
        aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
    surgeon.backward(main=main, aux=aux, scaler=scaler)  # NOT scaler.scale(main)
    scaler.step(opt)
    scaler.update()
print(
    f"float16 + GradScaler: {surgeon.step_count} steps, scale {scaler.get_scale():.0f}, "
    f"skipped {surgeon.skipped_steps}, EMA dtype {surgeon.ema[0].dtype}"
)

# %%
# bfloat16 autocast, and bfloat16 parameters: no scaler.

model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1)).to(torch.bfloat16)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
surgeon = torchbloop.Bloop(model.parameters(), lam=0.1)
for _ in range(20):
    idx = torch.randint(0, 256, (32,))
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        main = nn.functional.mse_loss(model(x[idx].bfloat16()).float(), y[idx])
        aux = sum(p.float().pow(2).sum() for p in model.parameters()) / 2
    surgeon.backward(main=main, aux=aux)
    opt.step()
print(
    f"bfloat16: parameters {model[0].weight.dtype}, EMA {surgeon.ema[0].dtype}, "
    f"main loss {main.item():.3f}"
)
