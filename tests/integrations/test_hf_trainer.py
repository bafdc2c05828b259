"""Hugging Face Trainer: the BloopTrainer recipe, on a tiny GPT-2 built from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from _examples import load_example

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)

example = load_example("hf_trainer")
STEPS = 3


def _args(out: Path, accumulation: int) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        gradient_accumulation_steps=accumulation,
    )


def _bloop(out: Path, accumulation: int, lam: float) -> Any:
    torch.manual_seed(0)
    trainer = example.BloopTrainer(
        model=example.tiny_gpt2(),
        args=_args(out, accumulation),
        train_dataset=example.Copies(),
        lam=lam,
    )
    trainer.train()
    assert trainer.surgeon.step_count == STEPS
    return trainer.model


def _stock(out: Path, accumulation: int) -> Any:
    from transformers import Trainer

    torch.manual_seed(0)
    model = example.tiny_gpt2()
    Trainer(model=model, args=_args(out, accumulation), train_dataset=example.Copies()).train()
    return model


def _check(tmp_path: Path, accumulation: int, lam: float) -> None:
    bloop = _bloop(tmp_path / "bloop", accumulation, lam)
    stock = _stock(tmp_path / "stock", accumulation)
    pairs = list(zip(bloop.parameters(), stock.parameters()))
    if lam == 0:  # Bloop's direction is then the main gradient: the run is the stock Trainer's
        for p, q in pairs:
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    else:
        assert any(not torch.allclose(p, q) for p, q in pairs)


def test_lam_zero_with_accumulation_equals_the_stock_trainer(tmp_path: Path) -> None:
    _check(tmp_path, accumulation=2, lam=0.0)


@pytest.mark.slow
@pytest.mark.parametrize(("accumulation", "lam"), [(1, 0.0), (1, 0.5)])
def test_more_trainer_settings(tmp_path: Path, accumulation: int, lam: float) -> None:
    _check(tmp_path, accumulation, lam)
