"""
torch.compile
=============

**The usual recipe:** compile the model and keep ``surgeon.backward`` eager (it calls
``torch.autograd.grad`` and checks finiteness once on the host). Compiled training equals
eager training within float32 rounding.

**Compiling the combination step itself:** for a training step compiled as a whole,
:func:`torchbloop.compile.compiled_bloop_step` returns Bloop's direction and EMA update compiled
with ``fullgraph=True`` (one graph, no break, no host synchronisation). On CPU float32/float64
gradients it calls the library's fused C kernel as a custom op.
"""

import torch
from torch import nn

import torchbloop
from torchbloop.compile import compiled_bloop_step

torch.manual_seed(0)
x, y = torch.randn(256, 8), torch.randn(256, 1)
model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
forward = torch.compile(model)  # Inductor, the default backend
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
surgeon = torchbloop.Bloop(model.parameters(), lam=0.1)
for _ in range(20):
    idx = torch.randint(0, 256, (32,))
    main = nn.functional.mse_loss(forward(x[idx]), y[idx])
    aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
    opt.zero_grad()
    surgeon.backward(main=main, aux=aux)
    opt.step()
print(f"compiled model, eager surgeon: {surgeon.step_count} steps, main {main.item():.4f}")

# %%
# The compiled step on gradients you computed yourself, checked against the eager
# :func:`torchbloop.functional.bloop_update_`.

params = list(model.parameters())
main = nn.functional.mse_loss(model(x), y)
aux = sum(p.pow(2).sum() for p in params) / 2
g_main = list(torch.autograd.grad(main, params, retain_graph=True))
g_aux = list(torch.autograd.grad(aux, params))

step = compiled_bloop_step()
ema = [g.clone() for g in g_main]
compiled = step(g_main, [g.clone() for g in g_aux], ema, lam=0.1, rho=0.01).direction

ema_eager = [g.clone() for g in g_main]
eager = torchbloop.functional.bloop_update_(
    g_main, [g.clone() for g in g_aux], ema_eager, lam=0.1, rho=0.01
).direction
error = max((a - b).abs().max().item() for a, b in zip(compiled, eager))
print(f"compiled step vs eager: largest difference {error:.1e}")
assert error < 1e-5
