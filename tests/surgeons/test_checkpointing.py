"""Activation checkpointing inside the model changes nothing: same directions, parameters and state.

``torch.utils.checkpoint.checkpoint`` recomputes a segment's forward during the backward pass,
in two ways: ``use_reentrant=False`` (saved-tensor hooks) and ``use_reentrant=True`` (a nested
backward inside the segment's ``backward``; still the default of many training stacks). For every
surgeon and both modes, a model with a checkpointed segment must train exactly like the same
model without checkpointing: the direction written to ``.grad`` at every step, the parameters
and the EMA agree to float64 rounding. Also for a Hugging Face GPT-2 with
``gradient_checkpointing_enable()`` and under DDP (gloo, world size 2).

On ``main`` the surgeons took the gradients with ``torch.autograd.grad``, which the reentrant
mode does not support (wrong gradients, no error): the reentrant cases failed there. The
surgeons now capture gradients through ``Tensor.backward``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

_DISTRIBUTED = str(Path(__file__).resolve().parents[1] / "distributed")
if _DISTRIBUTED not in sys.path:  # the workers and the launcher (spawned ranks import them too)
    sys.path.insert(0, _DISTRIBUTED)

from _checkpointing_workers import MODES, STEPS, SURGEONS, train, train_all_ddp  # noqa: E402
from _launch import run_ranks  # noqa: E402

TOL = {"rtol": 1e-12, "atol": 1e-14}


def _mode_params(extra: tuple[Any, ...] = ()) -> list[Any]:
    """``(surgeon, mode, *extra)`` for every surgeon and mode."""
    out = []
    for name in SURGEONS:
        for mode in MODES:
            marks: list[Any] = []
            out.append(pytest.param(name, mode, *extra, marks=marks, id=f"{name}-{mode}"))
    return out


def assert_same_training(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got["steps"] == expected["steps"] == STEPS
    for step, (ds, es) in enumerate(zip(got["directions"], expected["directions"])):
        for i, (d, e) in enumerate(zip(ds, es)):
            assert (d is None) == (e is None), f"step {step}, parameter {i}: .grad presence differs"
            if d is not None:
                torch.testing.assert_close(
                    d,
                    e,
                    **TOL,
                    msg=lambda m, s=step, k=i: f"direction, step {s}, parameter {k}: {m}",
                )
    for a, b in zip(got["params"], expected["params"]):
        torch.testing.assert_close(a, b, **TOL)
    assert (got["ema"] is None) == (expected["ema"] is None)
    if expected["ema"] is not None:
        for a, b in zip(got["ema"], expected["ema"]):
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("aux_kind", ["data", "shared"])
@pytest.mark.parametrize(("surgeon", "mode"), _mode_params())
def test_checkpointed_segment_trains_like_the_plain_model(
    surgeon: str, mode: str, aux_kind: str
) -> None:
    assert_same_training(train(surgeon, mode, aux_kind), train(surgeon, None, aux_kind))


def test_the_reference_is_not_trivial() -> None:
    """The checkpointed segment's parameters get nonzero directions that change the trajectory."""
    plain = train("bloop_paper", None, "data")
    block = [d for d in plain["directions"][-1][2:6]]  # the Linear layers inside the segment
    assert all(d is not None and d.abs().max() > 1e-3 for d in block)
    mixed = train("mixed", None, "data")
    assert not torch.allclose(plain["params"][2], mixed["params"][2])


# ---------------------------------------------------------------- Hugging Face transformers


def _gpt2(checkpointing: str | None) -> Any:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=32,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).double()
    if checkpointing is not None:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": checkpointing == "reentrant"}
        )
        assert model.is_gradient_checkpointing
    model.train()
    return model


def _train_gpt2(surgeon_name: str, checkpointing: str | None) -> dict[str, Any]:
    model = _gpt2(checkpointing)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05)
    surgeon = SURGEONS[surgeon_name](params)
    g = torch.Generator().manual_seed(3)
    directions = []
    for _ in range(STEPS):
        ids = torch.randint(0, 32, (4, 12), generator=g)
        other = torch.randint(0, 32, (4, 12), generator=g)
        main = model(input_ids=ids, labels=ids).loss
        aux = model(input_ids=other, labels=other.flip(1)).loss
        surgeon.backward(main=main, aux=aux)
        directions.append([None if p.grad is None else p.grad.detach().clone() for p in params])
        opt.step()
    ema = getattr(surgeon, "ema", None)
    return {
        "directions": directions,
        "params": [p.detach().clone() for p in params],
        "ema": None if ema is None else [e.detach().clone() for e in ema],
        "steps": surgeon.step_count,
    }


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize(("surgeon", "mode"), _mode_params())
def test_hugging_face_gradient_checkpointing(surgeon: str, mode: str) -> None:
    assert_same_training(_train_gpt2(surgeon, mode), _train_gpt2(surgeon, None))


# ---------------------------------------------------------------- DDP (gloo, world size 2)

DDP_SURGEONS = ("bloop_paper", "mixed")


DDP_CONFIGS = [(n, m, a) for m in MODES for n in DDP_SURGEONS for a in ("data", "shared")]


@pytest.fixture(scope="module")
def ddp_results() -> list[Any]:
    """Every configuration in one pair of processes (start-up dominates the cost).

    A configuration that raises comes back as its traceback; on ``main`` the reentrant ones raise
    on both ranks alike before any collective, so the others are not disturbed.
    """
    return run_ranks(train_all_ddp, DDP_CONFIGS)


@pytest.mark.distributed
@pytest.mark.parametrize("aux_kind", ["data", "shared"])
@pytest.mark.parametrize(
    ("surgeon", "mode"),
    [p for p in _mode_params() if p.values[0] in DDP_SURGEONS],
)
def test_ddp_with_checkpointing_equals_single_process(
    ddp_results: list[Any], surgeon: str, mode: str, aux_kind: str
) -> None:
    k = DDP_CONFIGS.index((surgeon, mode, aux_kind))
    reference = train(surgeon, None, aux_kind)  # one process, the whole batch, no checkpointing
    for rank_results in ddp_results:
        got = rank_results[k]
        if isinstance(got, str):
            pytest.fail(got)
        assert_same_training(got, reference)
