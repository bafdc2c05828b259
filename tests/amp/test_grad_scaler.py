"""Mixed precision: GradScaler, bf16/fp16 parameters and autocast (CPU)."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from torchbloop import Bloop, Mixed


def _model(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)


def _batch(step: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(32, 5, generator=g)
    return x.to(dtype), x[:, :2].sum(1, keepdim=True).sin().to(dtype)


def _losses(model: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _batch(step, next(model.parameters()).dtype)
    main = nn.functional.mse_loss(model(x), y)
    aux = sum(p.float().pow(2).sum() for p in model.parameters()) / 2
    return main, aux


def _run(
    scaler: torch.amp.GradScaler | None, steps: int = 6, k: int = 1
) -> tuple[nn.Module, Bloop, list[float]]:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    surgeon = Bloop(model.parameters(), lam=0.3 if k == 1 else [0.3, 0.05], rho=0.2)
    scales = []
    for step in range(steps):
        opt.zero_grad()
        main, aux = _losses(model, step)
        if k == 2:  # a second aux loss: the output's mean on the next batch
            aux = [aux, model(_batch(step + 100)[0]).mean() ** 2]  # type: ignore[assignment]
        if scaler is None:
            surgeon.backward(main=main, aux=aux)
            opt.step()
        else:
            surgeon.backward(main=main, aux=aux, scaler=scaler)
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
    return model, surgeon, scales


@pytest.mark.parametrize("k", [1, 2])
def test_scaled_training_equals_unscaled_bit_for_bit(k: int) -> None:
    ref_model, ref_surgeon, _ = _run(None, k=k)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=2)
    model, surgeon, scales = _run(scaler, k=k)
    assert len(set(scales)) > 1  # the scale really changed during the run
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    assert ref_surgeon.emas is not None and surgeon.emas is not None
    assert len(surgeon.emas) == k
    for level, ref_level in zip(surgeon.emas, ref_surgeon.emas):
        for a, b in zip(level, ref_level):
            assert torch.equal(a, b)
    assert surgeon.step_count == ref_surgeon.step_count == 6


def test_grad_holds_the_scaled_direction() -> None:
    model = _model()
    ref = Bloop(model.parameters(), lam=0.3)
    main, aux = _losses(model, 0)
    ref.backward(main=main, aux=aux)
    expected = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    for p in model.parameters():
        p.grad = None
    surgeon = Bloop(model.parameters(), lam=0.3)
    main, aux = _losses(model, 0)
    surgeon.backward(main=main, aux=aux, scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    for p, e in zip(model.parameters(), expected):
        assert torch.equal(p.grad, e * 1024.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("cause", ["scale", "data"])
def test_overflow_step_changes_nothing_and_the_scaler_backs_off(cause: str) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    surgeon = Bloop(
        model.parameters(), lam=0.3, rho=0.2
    )  # nonfinite="raise": a scaler never raises
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    for step in range(2):  # build some state first
        main, aux = _losses(model, step)
        surgeon.backward(main=main, aux=aux, scaler=scaler)
        scaler.step(opt)
        scaler.update()
    params = [p.detach().clone() for p in model.parameters()]
    assert surgeon.ema is not None
    ema = [e.clone() for e in surgeon.ema]
    state = (surgeon.step_count, surgeon.skipped_steps)
    if cause == "scale":
        scaler.update(2.0**127)  # float32 gradients times 2**127 overflow
    else:
        model[0].weight.data[0, 0] = float("inf")  # type: ignore[index]
    before = scaler.get_scale()
    main, aux = _losses(model, 2)
    surgeon.backward(main=main * 1e3, aux=aux, scaler=scaler)
    if cause == "data":
        model[0].weight.data[0, 0] = params[0][0, 0]  # type: ignore[index]
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == before * 0.5  # the scaler saw the overflow and backed off
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    for e, f in zip(surgeon.ema, ema):
        assert torch.equal(e, f)
    assert (surgeon.step_count, surgeon.skipped_steps) == (state[0], state[1] + 1)


def test_disabled_scaler_is_no_scaler() -> None:
    model = _model()
    surgeon = Mixed(model.parameters(), lam=0.5)
    main, aux = _losses(model, 0)
    surgeon.backward(main=main, aux=aux, scaler=torch.amp.GradScaler("cpu", enabled=False))
    got = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    main, aux = _losses(model, 0)
    surgeon.backward(main=main, aux=aux)
    for p, g in zip(model.parameters(), got):
        assert torch.equal(p.grad, g)  # type: ignore[arg-type]


def test_invalid_scaler_rejected() -> None:
    model = _model()
    main, aux = _losses(model, 0)
    with pytest.raises(TypeError, match="Invalid scaler"):
        Bloop(model.parameters(), lam=0.1).backward(main=main, aux=aux, scaler=2.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_keep_a_float32_ema_through_save_and_load(dtype: torch.dtype) -> None:
    model = _model(dtype)
    surgeon = Bloop(model.parameters(), lam=0.3)
    for step in range(2):
        main, aux = _losses(model, step)
        surgeon.backward(main=main, aux=aux)
    assert surgeon.ema is not None and all(e.dtype == torch.float32 for e in surgeon.ema)
    buffer = io.BytesIO()
    torch.save(surgeon.state_dict(), buffer)
    buffer.seek(0)
    fresh = Bloop(model.parameters(), lam=0.3)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.ema is not None
    for e, f in zip(fresh.ema, surgeon.ema):
        assert e.dtype == torch.float32 and torch.equal(e, f)
    # a state saved in the parameters' dtype (as torch.optim would cast it) comes back float32
    low = surgeon.state_dict()
    low["state"] = {i: {k: v.to(dtype) for k, v in s.items()} for i, s in low["state"].items()}
    fresh.load_state_dict(low)
    assert all(e.dtype == torch.float32 for e in fresh.ema)


def test_backward_inside_autocast_equals_outside() -> None:
    """Inner products stay float64 (the Gram) and gradients keep their dtypes inside autocast."""
    results = []
    for inside in (False, True):
        model = _model()
        surgeon = Bloop(model.parameters(), lam=0.3, rho=0.5, diagnostics=True)
        for step in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                main, aux = _losses(model, step)
                if inside:
                    surgeon.backward(main=main, aux=aux)
            if not inside:
                surgeon.backward(main=main, aux=aux)
        assert surgeon.diagnostics is not None and surgeon.diagnostics.coef.dtype == torch.float64
        results.append([p.grad.clone() for p in model.parameters()] + surgeon.ema)  # type: ignore[operator,union-attr]
    for a, b in zip(*results):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_fp16_autocast_with_scaler_trains() -> None:
    """The usual CPU recipe: float32 master weights, float16 autocast, a GradScaler."""
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    surgeon = Bloop(model.parameters(), lam=0.1)
    scaler = torch.amp.GradScaler("cpu")
    first = last = math.nan
    for step in range(30):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            main, aux = _losses(model, step % 4)
        surgeon.backward(main=main, aux=aux, scaler=scaler)
        scaler.step(opt)
        scaler.update()
        first = float(main.detach()) if step == 0 else first
        last = float(main.detach())
    assert last < first
    assert surgeon.ema is not None and all(e.dtype == torch.float32 for e in surgeon.ema)
