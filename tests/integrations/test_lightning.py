"""PyTorch Lightning (manual optimization): the example trains exactly like a plain loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
from _examples import load_example

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

example = load_example("lightning_train")


def _plain_loop(steps: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    module = example.BloopRegression()
    opt = module.configure_optimizers()
    for step, (x, y) in enumerate(example.make_loader()):
        if step == steps:
            break
        opt.zero_grad()
        main = nn.functional.mse_loss(module(x), y)
        aux = sum(p.pow(2).sum() for p in module.parameters()) / 2
        module.surgeon.backward(main=main, aux=aux, aux_replicated=True)
        opt.step()
    return module, module.surgeon.ema[0]


def test_lightning_training_equals_a_plain_loop() -> None:
    trained = example.train(6)
    plain, _ = _plain_loop(6)
    assert trained.surgeon.step_count == 6
    for p, q in zip(trained.parameters(), plain.parameters()):
        assert torch.equal(p, q)
    for e, f in zip(trained.surgeon.ema, plain.surgeon.ema):
        assert torch.equal(e, f)


def test_lightning_checkpoint_carries_the_surgeon(tmp_path: Path) -> None:
    """``on_save_checkpoint``/``on_load_checkpoint`` put the surgeon's state in the .ckpt file.

    (Exact resumption of the *data* is Lightning's business: a run stopped by ``max_steps`` at
    an epoch's end replays a batch on resume, so the test checks the surgeon state itself.)
    """
    first = example.train(3, n=96, enable_checkpointing=True, default_root_dir=tmp_path)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    restored = example.BloopRegression.load_from_checkpoint(ckpt)
    assert restored.surgeon.step_count == first.surgeon.step_count == 3
    for e, f in zip(restored.surgeon.ema, first.surgeon.ema):
        assert torch.equal(e, f)
    saved = torch.load(ckpt, weights_only=False)["bloop"]
    assert saved["step"] == 3 and saved["method"] == "Bloop"
