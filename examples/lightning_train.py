"""Bloop in PyTorch Lightning: manual optimization, surgeon state in Lightning checkpoints.

    pip install lightning
    python examples/lightning_train.py --steps 100

The surgeon replaces ``self.manual_backward(loss)``: it computes both gradients and leaves the
direction in ``.grad``; ``opt.step()`` applies it through Lightning's precision and strategy
plugins as usual. Under a DDP strategy the surgeon averages the gradients over the ranks itself;
under ``precision="16-mixed"`` (CUDA) pass Lightning's ``GradScaler`` (done below), so that
``opt.step()`` unscales, skips overflow steps and updates the scale. The surgeon is created in
``__init__`` so that ``on_load_checkpoint`` (which runs before ``configure_optimizers`` when
resuming) can restore its EMA.
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchbloop import Bloop


class BloopRegression(L.LightningModule):
    """A small regressor; main loss: MSE on the data, auxiliary loss: weight decay."""

    def __init__(self, lam: float = 0.01, rho: float = 0.05, lr: float = 3e-3) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
        self.surgeon = Bloop(self.parameters(), lam=lam, rho=rho)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers()
        opt.zero_grad()  # type: ignore[union-attr]
        main = nn.functional.mse_loss(self(x), y)
        aux = sum(p.pow(2).sum() for p in self.parameters()) / 2
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self.surgeon.backward(main=main, aux=aux, scaler=scaler, aux_replicated=True)
        opt.step()  # type: ignore[union-attr]
        self.log_dict({"main": main.detach(), "aux": aux.detach()}, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bloop"] = self.surgeon.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.surgeon.load_state_dict(checkpoint["bloop"])


def make_loader(n: int = 512, batch_size: int = 32) -> DataLoader[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = x[:, :3].sum(1, keepdim=True).sin()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def train(steps: int, n: int = 512, **trainer_kwargs: Any) -> BloopRegression:
    """Fit for ``steps`` optimizer steps on ``n`` samples on the CPU; returns the trained module."""
    torch.manual_seed(0)
    module = BloopRegression()
    kwargs: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": steps,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    kwargs.update(trainer_kwargs)
    L.Trainer(**kwargs).fit(module, make_loader(n))
    return module


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Bloop with PyTorch Lightning (manual optimization)"
    )
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    trained = train(args.steps)
    x, y = make_loader(batch_size=512).dataset.tensors  # type: ignore[attr-defined]
    with torch.no_grad():
        print(
            f"steps {trained.surgeon.step_count}  final main loss {nn.functional.mse_loss(trained(x), y):.4f}"
        )
