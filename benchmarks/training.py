"""Targets 2 and 4 of issue 5: whole training steps, and how the two gradients are computed.

Two models of the paper's experiments, on synthetic data of the same shapes (the timing does
not depend on the values): the Fashion-MNIST MLP 784-256-128-10 at batch 256, and a small
character-level transformer language model (about 0.2M parameters) at batch 32 x 128. Both
losses come from one forward pass: the main loss is the cross-entropy, the auxiliary loss a
penalty on the same logits, so Bloop and Mixed run the same two backward passes and differ
only in the combination step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import torchbloop
from _timing import measure
from torchbloop import Surgeon
from torchbloop.functional import use_cpu_kernel

VOCAB = 96


class CharLM(nn.Module):
    """A small pre-norm transformer LM: embeddings, ``layers`` blocks, tied output head."""

    def __init__(
        self, *, width: int = 64, layers: int = 3, heads: int = 4, context: int = 128
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.zeros(context, width))
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.register_buffer(
            "mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False
        )

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[1]
        h = self.embed(tokens) + self.pos[:n]
        h = self.blocks(h, mask=self.mask[:n, :n], is_causal=True)
        return self.norm(h) @ self.embed.weight.t()


def mlp(h1: int = 256, h2: int = 128) -> nn.Module:
    """The Fashion-MNIST MLP of the paper's experiments (784-256-128-10 by default)."""
    return nn.Sequential(
        nn.Linear(784, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 10)
    )


@dataclass
class Task:
    """A model and a function from it to (main loss, aux loss) on a fixed synthetic batch."""

    name: str
    model: nn.Module
    losses: Callable[[], tuple[Tensor, Tensor]]


def make_task(name: str, *, batch: int, context: int = 128, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name in ("mlp", "mlp-wide"):
        h1, h2 = (256, 128) if name == "mlp" else (2048, 2048)
        model = mlp(h1, h2)
        x = torch.randn(batch, 784, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)

        def losses() -> tuple[Tensor, Tensor]:
            logits = model(x)
            return nn.functional.cross_entropy(logits, y), logits.pow(2).mean()

        return Task(f"MLP 784-{h1}-{h2}-10, batch {batch}", model, losses)
    model = CharLM(context=context)
    tokens = torch.randint(0, VOCAB, (batch, context + 1), generator=g)

    def lm_losses() -> tuple[Tensor, Tensor]:
        logits = model(tokens[:, :-1])
        main = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        return main, torch.logsumexp(logits, -1).pow(2).mean()

    n = sum(p.numel() for p in model.parameters())
    return Task(
        f"char transformer LM ({n / 1e6:.2f}M params), batch {batch}x{context}", model, lm_losses
    )


TORCH_OPS = "Bloop (torch ops, no C kernel)"


def make_surgeon(method: str, model: nn.Module) -> Surgeon:
    if method in ("Bloop", TORCH_OPS):
        return torchbloop.Bloop(model.parameters(), lam=0.1, rho=0.01)
    return torchbloop.Mixed(model.parameters(), lam=0.1)


def step_fn(task: Task, method: str) -> Callable[[], None]:
    surgeon = make_surgeon(method, task.model)
    opt = torch.optim.SGD(task.model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        main, aux = task.losses()
        surgeon.backward(main, aux)
        opt.step()

    if method != TORCH_OPS:
        return step

    def without_kernel() -> None:  # what runs where no C compiler is found
        previous = use_cpu_kernel(False)
        try:
            step()
        finally:
            use_cpu_kernel(previous)

    return without_kernel


def run_steps(tasks: list[Task], repeats: int) -> list[dict[str, object]]:
    """Target 2: one training step with Bloop and with Mixed (same forward, same two backwards)."""
    rows = []
    for task in tasks:
        fns = {m: step_fn(task, m) for m in ("Mixed", "Bloop", TORCH_OPS)}
        fns["forward + two backward passes only"] = _grads_only(task)
        times = measure(fns, repeats=repeats, warmup=3)
        for name, t in times.items():
            rows.append(
                {"task": task.name, "path": name, "seconds": t, "vs_mixed": t / times["Mixed"]}
            )
    return rows


def _grads_only(task: Task) -> Callable[[], None]:
    params = list(task.model.parameters())

    def run() -> None:
        main, aux = task.losses()
        torch.autograd.grad(main, params, retain_graph=True)
        torch.autograd.grad(aux, params)

    return run


def two_passes(task: Task) -> Callable[[], tuple[Tensor, ...]]:
    """What ``Surgeon._compute_gradients`` does: two ``autograd.grad`` calls, graph retained."""
    params = list(task.model.parameters())

    def run() -> tuple[Tensor, ...]:
        main, aux = task.losses()
        return torch.autograd.grad(main, params, retain_graph=True) + torch.autograd.grad(
            aux, params
        )

    return run


def batched_vjp(task: Task) -> Callable[[], tuple[Tensor, ...]]:
    """One vector-Jacobian product with a batch of two cotangents (``is_grads_batched=True``)."""
    params = list(task.model.parameters())
    eye = torch.eye(2)

    def run() -> tuple[Tensor, ...]:
        main, aux = task.losses()
        return torch.autograd.grad(
            torch.stack([main, aux]), params, grad_outputs=eye, is_grads_batched=True
        )

    return run


def run_vjp(tasks: list[Task], repeats: int) -> list[dict[str, object]]:
    """Target 4: forward + two backward passes vs forward + one batched VJP (equal results?)."""
    rows = []
    for task in tasks:
        two, batched = two_passes(task), batched_vjp(task)
        try:
            ref, got = two(), batched()
            n = len(ref) // 2
            err = max(
                float(
                    (got[i][k] - ref[k * n + i]).abs().max()
                    / ref[k * n + i].abs().max().clamp_min(1e-30)
                )
                for i in range(n)
                for k in range(2)
            )
        except Exception as exc:
            rows.append(
                {
                    "task": task.name,
                    "path": "batched VJP",
                    "seconds": float("nan"),
                    "note": str(exc)[:80],
                }
            )
            continue
        times = measure(
            {"two backward passes": two, "one batched VJP": batched}, repeats=repeats, warmup=2
        )
        for name, t in times.items():
            rows.append(
                {
                    "task": task.name,
                    "path": name,
                    "seconds": t,
                    "vs_two": t / times["two backward passes"],
                    "note": f"max rel. diff {err:.1e}" if name == "one batched VJP" else "",
                }
            )
    return rows
