"""Bloop in the Hugging Face ``Trainer``: a subclass that overrides the training step.

    pip install transformers accelerate
    python examples/hf_trainer.py --steps 20

``Trainer.training_step`` normally calls ``accelerator.backward(loss)``; :class:`BloopTrainer`
calls ``surgeon.backward(main=..., aux=...)`` instead and returns the main loss for logging.
The Trainer then clips, steps the optimizer and the scheduler, and zeroes the gradients as
usual. Gradient accumulation maps onto the surgeon's (``accumulate=`` until the last
micro-batch, which Accelerate flags with ``sync_gradients``); under multi-process training the
surgeon averages the gradients itself. The model here is a tiny GPT-2 built from a config (no
download); the auxiliary loss keeps the weights close to their initial values (an L2-SP penalty,
the same on every rank).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from torchbloop import Bloop


class BloopTrainer(Trainer):
    """A ``Trainer`` whose step hands ``Bloop``'s direction to the optimizer.

    Args:
        lam: Bloop's ``lam``. rho: Bloop's ``rho``.
        *args, **kwargs: what ``Trainer`` takes.
    """

    def __init__(self, *args: Any, lam: float = 0.1, rho: float = 0.05, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.surgeon = Bloop(params, lam=lam, rho=rho)
        self.anchor = [p.detach().clone() for p in params]

    def aux_loss(self, model: nn.Module) -> torch.Tensor:
        """The auxiliary loss: squared distance of the weights to their initial values."""
        params = [p for p in model.parameters() if p.requires_grad]
        return sum((p - a).pow(2).sum() for p, a in zip(params, self.anchor)) / 2  # type: ignore[return-value]

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)
        main = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        steps = self.args.gradient_accumulation_steps
        if num_items_in_batch is None and steps > 1:
            main = main / steps  # the Trainer's usual scaling of a per-micro-batch mean
        aux = self.aux_loss(model) / steps
        last = self.accelerator.sync_gradients
        self.surgeon.backward(main=main, aux=aux, accumulate=not last, aux_replicated=True)
        return main.detach()


def tiny_gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=64,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


class Copies(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sequences that repeat a random prefix (learnable by a 2-layer model)."""

    def __init__(self, n: int = 256, length: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        prefix = torch.randint(0, 64, (n, length // 2), generator=g)
        self.ids = torch.cat([prefix, prefix], dim=1)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def train(steps: int, output_dir: str, **args: Any) -> BloopTrainer:
    """Train the tiny model for ``steps`` optimizer steps on the CPU."""
    torch.manual_seed(0)
    arguments = {
        "output_dir": output_dir,
        "max_steps": steps,
        "per_device_train_batch_size": 16,
        "learning_rate": 3e-3,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": max(1, steps // 4),
        "disable_tqdm": True,
        "seed": 0,
    }
    arguments.update(args)
    trainer = BloopTrainer(
        model=tiny_gpt2(), args=TrainingArguments(**arguments), train_dataset=Copies(), lam=0.1
    )
    trainer.train()
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Bloop with the Hugging Face Trainer")
    parser.add_argument("--steps", type=int, default=40)
    cli = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        trained = train(cli.steps, out)
    print(f"surgeon steps {trained.surgeon.step_count}; log: {trained.state.log_history[-1]}")
