"""GradScaler with every method of the method table (``torchbloop.methods.METHODS``).

For each method: training with a ``GradScaler`` whose scale changes during the run gives the
same parameters and the same state (per-parameter buffers and scalar state: GradVac's target
cosine, MetaBalance's norm averages) as training without one, bit for bit (scales are powers
of two, so scaling and unscaling float32 gradients is exact); ``.grad`` holds the scaled
direction; a step that overflows (a scale too large, or an inf in the data) changes neither
the parameters nor any state, counts as skipped, and makes the scaler back off. The Bloop and
Mixed cases with K = 2, autocast and low-precision parameters are in ``test_grad_scaler.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from torchbloop.methods import METHODS

LAM = 0.3
STEPS = 6


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))


def _losses(model: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A regression loss (main) and a loss on another batch that partly conflicts with it."""
    g = torch.Generator().manual_seed(step)
    x = torch.randn(32, 5, generator=g)
    xa = torch.randn(32, 5, generator=g)
    main = nn.functional.mse_loss(model(x), x[:, :2].sum(1, keepdim=True).sin())
    aux = nn.functional.mse_loss(model(xa), -xa[:, 1:3].sum(1, keepdim=True).cos())
    return main, aux


def _surgeon(method: str, model: nn.Module) -> Any:
    info = METHODS[method]
    kwargs = {"lam": LAM} if info.takes_lam else {}
    return info.factory(model.parameters(), **kwargs)


def _assert_same(a: Any, b: Any, where: str = "state_dict") -> None:
    """Equal nested state dicts: tensors bit for bit (dtype included), the rest by ``==``."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _has_state(sd: dict[str, Any]) -> bool:
    """Whether the state dict holds any non-zero state tensor (per-parameter or scalar)."""
    tensors = [t for entry in sd["state"].values() for t in entry.values()]
    tensors += [t for t in sd.get("scalars", {}).values() if isinstance(t, torch.Tensor)]
    return any(bool((t != 0).any()) for t in tensors)


def _run(method: str, scaler: torch.amp.GradScaler | None) -> tuple[nn.Module, Any, list[float]]:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    surgeon = _surgeon(method, model)
    scales = []
    for step in range(STEPS):
        opt.zero_grad()
        main, aux = _losses(model, step)
        if scaler is None:
            surgeon.backward(main=main, aux=aux)
            opt.step()
        else:
            surgeon.backward(main=main, aux=aux, scaler=scaler)
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
    return model, surgeon, scales


@pytest.mark.parametrize("method", list(METHODS))
def test_scaled_training_equals_unscaled_bit_for_bit(method: str) -> None:
    ref_model, ref_surgeon, _ = _run(method, None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=2)
    model, surgeon, scales = _run(method, scaler)
    assert len(set(scales)) > 1  # the scale really changed during the run
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    sd = surgeon.state_dict()
    _assert_same(sd, ref_surgeon.state_dict())
    assert sd["step"] == STEPS and sd["skipped_steps"] == 0


@pytest.mark.parametrize("method", list(METHODS))
def test_grad_holds_the_scaled_direction(method: str) -> None:
    model = _model()
    main, aux = _losses(model, 0)
    _surgeon(method, model).backward(main=main, aux=aux)
    expected = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    for p in model.parameters():
        p.grad = None
    main, aux = _losses(model, 0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    _surgeon(method, model).backward(main=main, aux=aux, scaler=scaler)
    for p, e in zip(model.parameters(), expected):
        assert torch.equal(p.grad, e * 2.0**10)  # type: ignore[arg-type]


@pytest.mark.parametrize("cause", ["scale", "data"])
@pytest.mark.parametrize("method", list(METHODS))
def test_overflow_step_changes_nothing_and_the_scaler_backs_off(method: str, cause: str) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    surgeon = _surgeon(method, model)  # nonfinite="raise": a scaler never raises
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    for step in range(2):  # build some state first
        main, aux = _losses(model, step)
        surgeon.backward(main=main, aux=aux, scaler=scaler)
        scaler.step(opt)
        scaler.update()
    params = [p.detach().clone() for p in model.parameters()]
    before_sd = surgeon.state_dict()
    if method in ("bloop", "gradvac", "metabalance"):  # the stateful ones: state to protect
        assert _has_state(before_sd)
    if cause == "scale":
        scaler.update(2.0**127)  # float32 gradients times 2**127 overflow
    else:
        model[2].weight.data[0, 0] = float("inf")  # type: ignore[index]  # (tanh would clip it in layer 0)
    before = scaler.get_scale()
    main, aux = _losses(model, 2)
    surgeon.backward(main=main * 1e3, aux=aux, scaler=scaler)
    if cause == "data":
        model[2].weight.data[0, 0] = params[2][0, 0]  # type: ignore[index]
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == before * 0.5  # the scaler saw the overflow and backed off
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    after_sd = surgeon.state_dict()
    assert after_sd["skipped_steps"] == before_sd["skipped_steps"] + 1
    after_sd["skipped_steps"] = before_sd["skipped_steps"]
    _assert_same(after_sd, before_sd)  # every other entry, the state included, unchanged
