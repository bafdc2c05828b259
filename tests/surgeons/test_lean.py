"""Lean capture (issue 14): the surgery inside ``.grad`` equals the separate capture.

Directions and EMAs of ``capture="lean"`` against ``capture="separate"`` on random models, both
EMA orders, the first step, the projection's skip rule, several aux losses for Mixed, at
gradient scales 1e-10..1e15 in float32 and float64; a resume within the mode is bit-exact;
what lean cannot run is refused before anything changes (or, under ``"auto"``, runs the
separate capture); failures of the second backward pass restore ``.grad`` and restart the EMA.
"""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from torch import nn

import torchbloop
from torchbloop import Bloop, Mixed, NonFiniteGradientError
from torchbloop.surgeons import _lean

ORDERS = ["paper", "code"]


class Net(nn.Module):
    """A random MLP; the aux loss reaches every parameter (lean runs without fallback)."""

    def __init__(self, seed: int, dtype: torch.dtype) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)  # float32 draws: the same values in both dtypes
        sizes = [5, 3 + seed % 4, 4, 2]
        self.weights = nn.ParameterList(
            nn.Parameter((torch.randn(a, b, generator=gen) / a**0.5).to(dtype))
            for a, b in itertools.pairwise(sizes)
        )
        self.biases = nn.ParameterList(
            nn.Parameter((torch.randn(b, generator=gen) * 0.1).to(dtype)) for b in sizes[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w + b
            if k < len(self.weights) - 1:
                x = torch.tanh(x)
        return x


def _losses(model: Net, step: int, scale: float = 1.0, k: int = 1):
    dtype = model.weights[0].dtype
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(16, 5, generator=gen).to(dtype)
    y = torch.randn(16, 2, generator=gen).to(dtype)
    out = model(x)
    main = ((out - y) ** 2).mean() * scale
    auxes = [
        (out.pow(2).mean() + 0.1 * sum(p.pow(2).sum() for p in model.parameters())) * scale,
        (out[:, :1] - 1).abs().mean() * scale,
        out.sum(0).pow(2).sum() * scale,
    ][:k]
    return main, auxes[0] if k == 1 else auxes


def _no_fallback(monkeypatch) -> None:
    def refuse(*args, **kw):
        raise AssertionError("lean capture fell back to the separate capture")

    monkeypatch.setattr(_lean, "_fallback", refuse)


def _run(make, capture, dtype, steps=4, scale=1.0, seed=0, k=1, **kw):
    model = Net(seed, dtype)
    surgeon = make(model.parameters(), capture=capture, **kw)
    directions, emas = [], []
    for step in range(steps):
        for p in model.parameters():
            p.grad = None
        surgeon.backward(*_losses(model, step, scale, k))
        directions.append([p.grad.clone() for p in model.parameters()])
        ema = getattr(surgeon, "ema", None)
        emas.append(None if ema is None else [e.clone() for e in ema])
        with torch.no_grad():  # the same trajectory for both captures: step on a fixed rule
            for p in model.parameters():
                p.sub_(0.05 * torch.sign(p))
    return directions, emas, surgeon


def _norm(ts) -> float:
    return float(torch.sqrt(sum(t.double().pow(2).sum() for t in ts)))


def _diff(a, b) -> float:
    return _norm([x.double() - y.double() for x, y in zip(a, b)])


def _bloop(order, lam=0.3, rho=0.2):
    def make(params, **kw):
        return Bloop(params, lam=lam, rho=rho, ema_order=order, **kw)

    return make


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-10, 1.0, 1e15])
@pytest.mark.parametrize("seed", [0, 1])
def test_bloop_lean_equals_separate(monkeypatch, order, dtype, scale, seed):
    _no_fallback(monkeypatch)
    d_lean, e_lean, s_lean = _run(_bloop(order), "lean", dtype, scale=scale, seed=seed)
    monkeypatch.undo()
    d_sep, e_sep, s_sep = _run(_bloop(order), "separate", dtype, scale=scale, seed=seed)
    eps = torch.finfo(dtype).eps
    for step in range(len(d_lean)):
        size = _norm(d_sep[step]) + _norm(e_sep[step])
        assert _diff(d_lean[step], d_sep[step]) <= 64 * eps * size, f"direction, step {step}"
        assert _diff(e_lean[step], e_sep[step]) <= 64 * eps * size, f"EMA, step {step}"
    assert s_lean.step_count == s_sep.step_count == len(d_lean)


@pytest.mark.parametrize("order", ORDERS)
def test_first_step_starts_the_ema_from_the_main_gradient(order):
    model = Net(0, torch.float64)
    surgeon = Bloop(model.parameters(), lam=0.5, rho=0.1, ema_order=order, capture="lean")
    main, aux = _losses(model, 0)
    g_main = torch.autograd.grad(main, list(model.parameters()), retain_graph=True)
    surgeon.backward(main, aux)
    assert all(torch.equal(e, g) for e, g in zip(surgeon.ema, g_main))  # its very buffers
    # both orders project on g_main on step 1: <d - g_main, g_main> = 0
    residual = sum(((p.grad - g) * g).sum() for p, g in zip(model.parameters(), g_main))
    assert abs(float(residual)) <= 1e-12 * _norm(g_main) * _norm(
        [p.grad for p in model.parameters()]
    )


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("lam", [1e-3, 1.0, 1e3])
def test_rounding_of_lean_in_float32_is_that_of_the_direction(order, lam):
    """Paper order cancels ``rho * a`` out of the EMA; code order takes ``<g_aux, e>`` as a
    difference of inner products. Both stay within a few eps of the direction's own size."""
    make = _bloop(order, lam=lam, rho=0.01)
    d32, e32, _ = _run(make, "lean", torch.float32, steps=5)
    d64, e64, _ = _run(make, "separate", torch.float64, steps=5)
    eps = torch.finfo(torch.float32).eps
    for step in range(5):
        size = _norm(d64[step])
        assert _diff(d32[step], d64[step]) <= 64 * eps * size
        assert _diff(e32[step], e64[step]) <= 64 * eps * (_norm(e64[step]) + 0.01 * size)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixed_lean_equals_separate(monkeypatch, k, dtype):
    def make(params, **kw):
        return Mixed(params, lam=[0.3, 0.2, 0.1][:k] if k > 1 else 0.3, **kw)

    _no_fallback(monkeypatch)
    d_lean, _, _ = _run(make, "lean", dtype, k=k)
    monkeypatch.undo()
    d_sep, _, _ = _run(make, "separate", dtype, k=k)
    eps = torch.finfo(dtype).eps
    for a, b in zip(d_lean, d_sep):
        assert _diff(a, b) <= 16 * eps * _norm(b)


@pytest.mark.parametrize("k", [2, 3])
def test_bloop_with_several_aux_losses_runs_the_separate_capture(k):
    lams = [0.3, 0.2, 0.1][:k]
    d_auto, _, _ = _run(lambda ps, **kw: Bloop(ps, lam=lams, **kw), "auto", torch.float64, k=k)
    d_sep, _, _ = _run(lambda ps, **kw: Bloop(ps, lam=lams, **kw), "separate", torch.float64, k=k)
    for a, b in zip(d_auto, d_sep):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="several auxiliary losses"):
        Bloop(Net(0, torch.float64).parameters(), lam=lams, capture="lean")


@pytest.mark.parametrize("order", ORDERS)
def test_a_zero_ema_skips_the_projection_as_the_separate_path_does(order):
    """Step 1 with a zero main gradient: a zero EMA; step 2 projects on it (paper: skipped)."""

    def run(capture):
        model = Net(0, torch.float64)
        surgeon = Bloop(model.parameters(), lam=0.5, rho=0.3, ema_order=order, capture=capture)
        out = []
        for step in range(3):
            for p in model.parameters():
                p.grad = None
            main, aux = _losses(model, step)
            surgeon.backward(main * (0.0 if step == 0 else 1.0), aux)
            out.append(
                ([p.grad.clone() for p in model.parameters()], [e.clone() for e in surgeon.ema])
            )
        return out

    for (d1, e1), (d2, e2) in zip(run("lean"), run("separate")):
        assert _diff(d1, d2) <= 1e-13 * (_norm(d2) + 1e-300)
        assert _diff(e1, e2) <= 1e-13 * (_norm(e2) + 1e-300)


def test_resume_within_lean_is_bit_exact():
    def trajectory(stop_at=None):
        model = Net(1, torch.float32)
        surgeon = Bloop(model.parameters(), lam=0.4, rho=0.1, capture="lean")
        out = []
        for step in range(6):
            if step == stop_at:
                buffer = io.BytesIO()
                torch.save(surgeon.state_dict(), buffer)
                buffer.seek(0)
                surgeon = Bloop(model.parameters(), lam=0.4, rho=0.1, capture="lean")
                surgeon.load_state_dict(torch.load(buffer, weights_only=True))
            for p in model.parameters():
                p.grad = None
            surgeon.backward(*_losses(model, step))
            out.append(
                [p.grad.clone() for p in model.parameters()] + [e.clone() for e in surgeon.ema]
            )
            with torch.no_grad():
                for p in model.parameters():
                    p.sub_(0.1 * p.grad)
        return out

    for a, b in zip(trajectory(), trajectory(stop_at=3)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------- refusals and failures


def _snapshot(model, surgeon):
    return (
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        None if surgeon.emas is None else [e.clone() for e in surgeon.ema],
        surgeon.step_count,
        surgeon.skipped_steps,
    )


def _same(a, b) -> bool:
    def eq(x, y):
        if x is None or y is None:
            return x is None and y is None
        if isinstance(x, torch.Tensor):
            return torch.equal(x, y)
        if isinstance(x, list):
            return len(x) == len(y) and all(eq(u, v) for u, v in zip(x, y))
        return x == y

    return all(eq(x, y) for x, y in zip(a, b))


def _primed(order="paper", **kw):
    model = Net(0, torch.float64)
    surgeon = Bloop(model.parameters(), lam=0.5, rho=0.2, ema_order=order, **kw)
    surgeon.backward(*_losses(model, 0))
    return model, surgeon


def test_invalid_capture_is_refused():
    params = list(Net(0, torch.float64).parameters())
    with pytest.raises(ValueError, match=r"Invalid capture='later'"):
        Bloop(params, lam=0.1, capture="later")
    with pytest.raises(ValueError, match=r"Invalid capture='lean': PCGrad"):
        torchbloop.PCGrad(params, lam=0.1, capture="lean")
    with pytest.raises(ValueError, match="diagnostics"):
        Bloop(params, lam=0.1, diagnostics=True, capture="lean")


@pytest.mark.parametrize("case", ["accumulate", "scaler", "group-lam-0", "code-group-lam"], ids=str)
def test_lean_refuses_what_it_cannot_run_before_anything_changes(case):
    order = "code" if case == "code-group-lam" else "paper"
    model = Net(0, torch.float64)
    params = list(model.parameters())
    groups = [{"params": params[:2]}, {"params": params[2:]}]
    if case == "group-lam-0":
        groups[0]["lam"] = 0.0
    if case == "code-group-lam":
        groups[0]["lam"] = 0.2
    surgeon = Bloop(groups, lam=0.5, ema_order=order, capture="lean")
    if case in ("accumulate", "scaler"):  # a primed surgeon (the EMA exists)
        surgeon.backward(*_losses(model, 0))
    before = _snapshot(model, surgeon)
    kw = {}
    if case == "accumulate":
        kw["accumulate"] = True
    if case == "scaler":
        kw["scaler"] = torch.amp.GradScaler("cpu", init_scale=4.0)
    with pytest.raises(ValueError, match="capture='lean'"):
        surgeon.backward(*_losses(model, 1), **kw)
    assert _same(before, _snapshot(model, surgeon))
    auto = Bloop(groups, lam=0.5, ema_order=order, capture="auto")
    auto.backward(*_losses(model, 1), **kw)  # auto runs the separate capture there
    assert auto.step_count == (0 if case == "accumulate" else 1)


@pytest.mark.parametrize("order", ORDERS)
def test_first_loss_problems_change_nothing(order):
    """The first backward pass (aux in paper order, main in code order) and every loss value
    are checked before anything changes."""
    model, surgeon = _primed(order, capture="lean")
    before = _snapshot(model, surgeon)
    main, aux = _losses(model, 1)
    bad = aux * float("nan") if order == "paper" else main * float("nan")
    args = (main, bad) if order == "paper" else (bad, aux)
    name = "aux" if order == "paper" else "main"
    with pytest.raises(NonFiniteGradientError, match=rf"^Non-finite {name} loss or gradient"):
        surgeon.backward(*args)
    assert _same(before, _snapshot(model, surgeon))
    main, aux = _losses(model, 1)  # a finite LOSS whose second gradient is inf: also the values
    with pytest.raises(NonFiniteGradientError, match="main"):
        surgeon.backward(main + float("inf"), aux)
    assert _same(before, _snapshot(model, surgeon))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_a_non_finite_second_gradient_restores_grad_and_restarts_the_ema(order, nonfinite):
    model, surgeon = _primed(order, capture="lean", nonfinite=nonfinite)
    sentinel = [torch.full_like(p, 3.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel):
        p.grad = s
    main, aux = _losses(model, 1)
    poison = model.weights[0].sum() * 0.0

    def inf_grad(t):  # a finite value whose gradient is inf
        return t + (torch.sqrt(poison - poison) * 0.0)

    args = (inf_grad(main), aux) if order == "paper" else (main, inf_grad(aux))
    if nonfinite == "raise":
        with pytest.raises(NonFiniteGradientError, match="restarts from the next step"):
            surgeon.backward(*args)
    else:
        surgeon.backward(*args)
        assert surgeon.skipped_steps == 1
    assert all(
        p.grad is s and torch.equal(s, torch.full_like(s, 3.0))
        for p, s in zip(model.parameters(), sentinel)
    )
    assert surgeon.emas is None and surgeon.step_count == 1
    surgeon.backward(*_losses(model, 2))  # the next step starts the EMA again
    assert surgeon.step_count == 2 and surgeon.ema is not None


def test_auto_with_nonfinite_skip_keeps_the_ema_of_a_skipped_step():
    model, surgeon = _primed("paper", nonfinite="skip", capture="auto")
    before = _snapshot(model, surgeon)
    main, aux = _losses(model, 1)
    surgeon.backward(main * float("nan"), aux)
    after = _snapshot(model, surgeon)
    assert after[3] == 1 and _same(before[:3], after[:3])


@pytest.mark.parametrize("order", ORDERS)
def test_a_second_loss_that_reaches_nothing_changes_nothing(order):
    model, surgeon = _primed(order, capture="lean")
    before = _snapshot(model, surgeon)
    other = torch.ones(3, requires_grad=True)
    main, aux = _losses(model, 1)
    args = ((other * 2).sum(), aux) if order == "paper" else (main, (other * 2).sum())
    name = "main" if order == "paper" else "aux"
    with pytest.raises(ValueError, match=rf"^Invalid {name} loss: it reaches none"):
        surgeon.backward(*args)
    assert _same(before, _snapshot(model, surgeon))


# --------------------------------------------------------------------------- reach


@pytest.mark.parametrize("order", ORDERS)
def test_partial_reach_gives_the_separate_result(order):
    """An aux loss on the weights only (biases unreached): paper order captures the main loss
    separately (exactly the separate path); code order folds a zero aux gradient in."""

    def run(capture):
        model = Net(0, torch.float64)
        surgeon = Bloop(model.parameters(), lam=0.5, rho=0.2, ema_order=order, capture=capture)
        out = []
        for step in range(3):
            for p in model.parameters():
                p.grad = None
            main, _ = _losses(model, step)
            aux = sum(w.pow(2).sum() for w in model.weights)
            surgeon.backward(main, aux)
            out.append(
                [p.grad.clone() for p in model.parameters()] + [e.clone() for e in surgeon.ema]
            )
        return out

    for a, b in zip(run("lean"), run("separate")):
        assert _diff(a, b) <= 1e-13 * _norm(b)


@pytest.mark.parametrize("reentrant", [True, False])
def test_activation_checkpointing(reentrant):
    """Reentrant checkpoints hide the parameters from the graph walk: the step captures the
    second loss separately; non-reentrant ones run lean. Both give the separate result."""

    def run(capture):
        model = Net(0, torch.float64)
        surgeon = Bloop(model.parameters(), lam=0.5, rho=0.2, capture=capture)
        out = []
        for step in range(3):
            for p in model.parameters():
                p.grad = None
            gen = torch.Generator().manual_seed(step)
            x = torch.randn(8, 5, generator=gen, dtype=torch.float64, requires_grad=reentrant)
            y = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=reentrant)
            main, aux = (y - 1).pow(2).mean(), y.pow(2).mean()
            surgeon.backward(main, aux)
            out.append(
                [p.grad.clone() for p in model.parameters()] + [e.clone() for e in surgeon.ema]
            )
        return out

    for a, b in zip(run("lean"), run("separate")):
        assert _diff(a, b) <= 1e-13 * _norm(b)


def test_reaches_finds_a_parameter_and_says_no_for_another_graph():
    model = Net(0, torch.float64)
    main, _ = _losses(model, 0)
    assert _lean.reaches(main, list(model.parameters()))
    other = torch.ones(2, requires_grad=True)
    assert not _lean.reaches((other * 3).sum(), list(model.parameters()))
    assert not _lean.reaches(torch.ones(()), list(model.parameters()))


def test_an_existing_grad_buffer_receives_the_direction():
    model = Net(0, torch.float64)
    buffers = [torch.zeros_like(p) for p in model.parameters()]
    for p, b in zip(model.parameters(), buffers):
        p.grad = b
    surgeon = Bloop(model.parameters(), lam=0.3, capture="lean")
    surgeon.backward(*_losses(model, 0))
    assert all(p.grad is b for p, b in zip(model.parameters(), buffers))
    assert any(bool(b.abs().sum() > 0) for b in buffers)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("foreach", [True, False])
def test_torch_op_path_without_the_cpu_kernel(monkeypatch, order, foreach):
    """What runs on CUDA, DTensor-free bf16 lists and without a C compiler: the contract's
    torch-op passes (the ordered in-place writes of ``_lincomb``)."""
    from torchbloop.functional import use_cpu_kernel

    def make(params, **kw):
        return Bloop(params, lam=0.3, rho=0.2, ema_order=order, foreach=foreach, **kw)

    previous = use_cpu_kernel(False)
    try:
        _no_fallback(monkeypatch)
        d_lean, e_lean, _ = _run(make, "lean", torch.float32)
        monkeypatch.undo()
        d_sep, e_sep, _ = _run(make, "separate", torch.float32)
    finally:
        use_cpu_kernel(previous)
    eps = torch.finfo(torch.float32).eps
    for step in range(len(d_lean)):
        size = _norm(d_sep[step]) + _norm(e_sep[step])
        assert _diff(d_lean[step], d_sep[step]) <= 64 * eps * size
        assert _diff(e_lean[step], e_sep[step]) <= 64 * eps * size


def test_bfloat16_parameters_keep_a_float32_ema_in_lean_mode():
    model = Net(0, torch.float32).to(torch.bfloat16)
    surgeon = Bloop(model.parameters(), lam=0.3, rho=0.2, capture="lean")
    for step in range(3):
        for p in model.parameters():
            p.grad = None
        surgeon.backward(*_losses(model, step))
        assert all(e.dtype == torch.float32 for e in surgeon.ema)
        assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters())
        assert all(bool(torch.isfinite(e).all()) for e in surgeon.ema)


def test_auto_runs_lean_where_it_applies_and_separate_is_the_default(monkeypatch):
    from torchbloop.surgeons import _stages

    model = Net(0, torch.float64)
    calls = []
    original = _stages.capture_gradients
    monkeypatch.setattr(_stages, "capture_gradients", lambda *a: calls.append(1) or original(*a))
    Bloop(model.parameters(), lam=0.3, capture="auto").backward(*_losses(model, 0))
    Mixed(model.parameters(), lam=0.3, capture="auto").backward(*_losses(model, 0))
    assert calls == []  # neither captured one list per loss
    Bloop(model.parameters(), lam=0.3).backward(*_losses(model, 0))
    assert calls == [1]
