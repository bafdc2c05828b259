"""
Gradient accumulation
=====================

With ``k`` micro-batches, pass ``accumulate=True`` for the first ``k - 1`` and a plain call for
the last, then step. Scale each loss by ``1/k`` as usual. The surgeon sums the raw gradients
and combines the totals once, so the direction and the EMA are exactly those of one call on the
whole batch. (The surgery is not linear in the gradients: summing per-micro-batch *directions*
would give a different result.)
"""

import torch
from torch import nn

import torchbloop

torch.manual_seed(0)
x, y = torch.randn(64, 8), torch.randn(64, 1)


def make():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    return model, torchbloop.Bloop(model.parameters(), lam=0.5, rho=0.1)


def losses(model, xb, yb):
    main = nn.functional.mse_loss(model(xb.double()), yb.double())
    aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
    return main, aux


# Four micro-batches of 16.
model, surgeon = make()
k = 4
for i, (xb, yb) in enumerate(zip(x.chunk(k), y.chunk(k))):
    main, aux = losses(model, xb, yb)
    surgeon.backward(main=main / k, aux=aux / k, accumulate=i < k - 1)
accumulated = [p.grad.clone() for p in model.parameters()]

# The same batch in one call.
model, surgeon = make()
main, aux = losses(model, x, y)
surgeon.backward(main=main, aux=aux)
whole = [p.grad.clone() for p in model.parameters()]

error = max((a - b).abs().max().item() for a, b in zip(accumulated, whole))
print(f"largest difference between the two directions: {error:.1e} (float64 rounding)")
assert error < 1e-12

# %%
# With the Hugging Face ``Trainer`` or Lightning the same flag is set from the framework's own
# accumulation state: see those recipes.
