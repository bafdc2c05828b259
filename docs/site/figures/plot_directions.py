"""
The four directions on a 2-D example
====================================

Two parameters, one main loss and one auxiliary loss whose gradients conflict
(:math:`\\langle g_{main}, g_{aux}\\rangle < 0`), ``lam = 1``. Every arrow is computed by
:mod:`torchbloop.functional`, the code the surgeons run.

*Left*: one step with exact gradients. Bloop's auxiliary term is orthogonal to the
main gradient, so the main loss decreases as it would without the auxiliary loss (to first
order); Mixed lets the auxiliary loss push against the main one; PCGrad also bends the main
gradient; Dynamic Barrier coincides with Bloop here (its clip is not active).

*Right*: the same methods on noisy mini-batch main gradients (noise 1.5 times the gradient's
norm), averaged over 2,000 draws. The methods that project on the *batch* gradient
(Bloop without EMA, PCGrad, Dynamic Barrier) lose their mean direction: for large noise in
:math:`p` dimensions the mean of Bloop without EMA tends to
:math:`g_{main} + \\lambda (1 - 1/p)\\, g_{aux}`, half-way to Mixed here (:math:`p = 2`) and all
the way to it in a model's dimension (the projection bias, Section 3 of the paper). Bloop
projects on an EMA of past main gradients, which does not depend on the current batch, and
keeps its mean direction.
"""

import matplotlib.pyplot as plt
import torch

from torchbloop.functional import (
    bloop_direction,
    dynamic_barrier_direction,
    mixed_direction,
    pcgrad_direction,
)

torch.manual_seed(0)
lam = 1.0
g_main = torch.tensor([1.0, 0.0], dtype=torch.float64)
g_aux = torch.tensor([-0.6, 1.0], dtype=torch.float64)


def directions(main, ema):
    """The four methods' directions for one (main gradient, EMA) pair."""
    m, a = [main], [g_aux]
    return {
        "Mixed": mixed_direction(m, a, lam=lam)[0],
        "PCGrad": pcgrad_direction(m, a, lam=lam)[0],
        "Dynamic Barrier": dynamic_barrier_direction(m, a, lam=lam)[0],
        "Bloop": bloop_direction(m, a, [ema], lam=lam).direction[0],
    }


colours = {
    "Mixed": "tab:blue",
    "PCGrad": "tab:green",
    "Dynamic Barrier": "tab:purple",
    "Bloop": "tab:red",
    "Bloop without EMA": "tab:orange",
}

# Exact gradients: the EMA of past main gradients equals the main gradient.
exact = directions(g_main, g_main)

# Noisy mini-batch main gradients; Bloop projects on the EMA (here: the expected main
# gradient, what an EMA over many steps estimates), the others on the batch gradient.
sigma, draws = 1.5, 2000
totals = {name: torch.zeros(2, dtype=torch.float64) for name in [*exact, "Bloop without EMA"]}
for _ in range(draws):
    batch = g_main + sigma * torch.randn(2, dtype=torch.float64)
    step = directions(batch, ema=g_main)
    for name, d in step.items():
        totals[name] += d
    no_ema = bloop_direction([batch], [g_aux], [batch], lam=lam).direction[0]
    totals["Bloop without EMA"] += no_ema
means = {name: total / draws for name, total in totals.items()}

fig, axes = plt.subplots(1, 2, figsize=(10, 5.4), sharex=True, sharey=True)
panels = [
    ("one step, exact gradients", exact),
    (f"mean over noisy batches, sigma = {sigma}", means),
]
for ax, (title, dirs) in zip(axes, panels):
    for vec, label, style in [(g_main, "g_main", "k-"), (g_aux, "g_aux", "k--")]:
        ax.annotate(
            "",
            xy=vec.tolist(),
            xytext=(0, 0),
            arrowprops={
                "arrowstyle": "->",
                "color": "0.35",
                "lw": 1.2,
                "ls": "--" if "--" in style else "-",
            },
        )
        ax.text(*(vec * 1.08).tolist(), label, color="0.25", fontsize=9)
    for name, d in sorted(dirs.items(), key=lambda item: item[0] != "Bloop"):  # Bloop first,
        width = 5 if name == "Bloop" else 2  # wide, so that an arrow on top of it stays visible
        ax.annotate(
            "",
            xy=d.tolist(),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "-|>", "color": colours[name], "lw": width},
        )
        ax.plot([], [], color=colours[name], lw=2, label=f"{name} ({d[0]:.2f}, {d[1]:.2f})")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_xlim(-0.8, 1.9)
    ax.set_ylim(-0.3, 1.7)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8)
fig.tight_layout()

for name, d in means.items():
    print(f"{name:18s} mean direction ({d[0]:+.3f}, {d[1]:+.3f})")
