"""
A plain training loop
=====================

The smallest complete use: a regressor trained on its data (the main loss) with weight decay
kept in check (the auxiliary loss). ``surgeon.backward`` replaces ``loss.backward()``; the
optimizer, the scheduler and gradient clipping are used as usual, since the direction is in
``.grad``. ``diagnostics=True`` records, per step, how much of the auxiliary gradient the
projection removed.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import torchbloop

torch.manual_seed(0)
x = torch.randn(512, 8)
y = (x[:, :3].sum(1, keepdim=True)).sin() + 0.1 * torch.randn(512, 1)


def train(lam, steps=200):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    surgeon = torchbloop.Bloop(model.parameters(), lam=lam, rho=0.05, diagnostics=True)
    history = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,))
        main = nn.functional.mse_loss(model(x[idx]), y[idx])
        aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
        opt.zero_grad()
        surgeon.backward(main=main, aux=aux)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # acts on the direction
        opt.step()
        sched.step()
        history.append((main.item(), aux.item()))
    return model, surgeon, history


runs = {lam: train(lam) for lam in (0.0, 0.01, 0.1)}
for lam, (_, surgeon, history) in runs.items():
    d = surgeon.diagnostics
    print(
        f"lam={lam:<5} main {history[-1][0]:.4f}  aux {history[-1][1]:7.2f}  "
        f"removed fraction of |g_aux|^2 at the last step {float(d.removed_fraction):.3f}"
    )

# %%
# The larger ``lam``, the smaller the weights; the main loss pays little for it.

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for lam, (_, _, history) in runs.items():
    main, aux = zip(*history)
    axes[0].plot(main, label=f"lam = {lam}")
    axes[1].plot(aux, label=f"lam = {lam}")
axes[0].set(title="main loss (MSE)", xlabel="step", yscale="log")
axes[1].set(title="aux loss (||theta||^2 / 2)", xlabel="step")
axes[0].legend()
fig.tight_layout()
