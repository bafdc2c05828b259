"""The contract every method of the method table passes (``torchbloop.methods.METHODS``).

Training works with torch optimizers, LR schedulers, parameter groups and ``clip_grad_norm_``;
the state round-trips; gradient accumulation, shared graphs and ``combine`` give what
``backward`` gives; parameters reached by one loss, by none, or frozen are handled as documented;
methods that take several auxiliary losses do all of this with K = 2 too. The suite builds every
surgeon through the table's ``factory`` with ``lam`` alone, so a new table entry is covered with
no change here; the method that ``docs/architecture.md`` adds as its example (its formula file and
table entry, executed from the page) runs through the suite as one more entry.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from _asserts import flat
from torchbloop import Bloop
from torchbloop.methods import METHODS as TABLE

LAM = 0.05


def _documented_example():
    """The method that docs/architecture.md adds (its two code blocks, run as written)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2, "docs/architecture.md: expected the formula and the table entry"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/architecture.md", "exec"), namespace)
    return namespace["COSINE_GATING"]


EXAMPLE = _documented_example()
ALL = {**TABLE, f"doc_example_{EXAMPLE.name}": EXAMPLE}  # the table has a cosine_gating too


def _make(method: str, params, **kw):
    lam = kw.pop("lam", LAM)
    if "lam" in ALL[method].hyperparameters:  # no lam: MetaBalance, the original barrier
        kw["lam"] = lam
    return ALL[method].factory(params, **kw)


def _combine(surgeon, g_main, g_aux, main=None):
    """``combine``, with the main loss value for the methods that need it."""
    if getattr(surgeon, "needs_main_loss", False):
        value = torch.zeros(()) if main is None else main.detach()
        return surgeon.combine(g_main, g_aux, main_loss=value)
    return surgeon.combine(g_main, g_aux)


FACTORIES = {name: (lambda params, _n=name, **kw: _make(_n, params, **kw)) for name in ALL}
METHODS = list(ALL)
MULTI = [name for name, info in ALL.items() if info.max_aux is None or info.max_aux >= 2]
SINGLE = [name for name, info in ALL.items() if info.max_aux == 1]


def _state_buffers(surgeon) -> dict:
    """The per-parameter state buffers, read through the public state dict."""
    return surgeon.state_dict()["state"]


def _assert_same_state(a, b, **tol) -> None:
    sa, sb = _state_buffers(a), _state_buffers(b)
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for key in sa[i]:
            torch.testing.assert_close(sa[i][key], sb[i][key], **tol)


class Toy(nn.Module):
    """A small MLP, plus a parameter only the aux loss reaches and one no loss reaches."""

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(4, 8, generator=gen, dtype=dtype) * 0.5)
        self.b1 = nn.Parameter(torch.zeros(8, dtype=dtype))
        self.w2 = nn.Parameter(torch.randn(8, 1, generator=gen, dtype=dtype) * 0.5)
        self.aux_only = nn.Parameter(torch.randn(3, generator=gen, dtype=dtype))
        self.unused = nn.Parameter(torch.randn(2, generator=gen, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2


def batch(step: int, n: int = 32, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 4, generator=gen, dtype=dtype)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    return x, y


def losses(model: Toy, x, y, scale: float = 1.0):
    main = ((model(x) - y) ** 2).mean()
    aux = (
        0.5 * (model.w1.pow(2).sum() + model.w2.pow(2).sum())
        + 0.5 * (model.aux_only - 1).pow(2).sum()
    )
    return main * scale, aux * scale


def full_main_loss(model: Toy) -> float:
    with torch.no_grad():
        x, y = batch(-1, n=256, dtype=model.w1.dtype)
        return float(((model(x) - y) ** 2).mean())


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: torch.optim.Adam(ps, lr=0.02),
        lambda ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=0.01),
    ],
    ids=["SGD", "Adam", "AdamW"],
)
@pytest.mark.parametrize("method", METHODS)
def test_main_loss_goes_down(method, make_opt):
    model = Toy()
    surgeon = FACTORIES[method](model.parameters())
    opt = make_opt(model.parameters())
    before = full_main_loss(model)
    for step in range(60):
        opt.zero_grad()
        surgeon.backward(*losses(model, *batch(step)))
        opt.step()
    after = full_main_loss(model)
    # Methods without priority for the main loss (MGDA, MetaBalance, the original barrier)
    # only promise that it goes down.
    bar = 0.5 if getattr(surgeon, "main_priority", True) else 1.0
    assert after < bar * before, (before, after)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert surgeon.step_count == 60


@pytest.mark.parametrize("method", METHODS)
def test_lr_scheduler_applies_to_the_direction(method):
    model = Toy()
    surgeon = FACTORIES[method](model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    before = full_main_loss(model)
    for step in range(12):
        opt.zero_grad()
        surgeon.backward(*losses(model, *batch(step)))
        w_before, grad = model.w1.detach().clone(), model.w1.grad.clone()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        torch.testing.assert_close(model.w1.detach(), w_before - lr * grad)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert full_main_loss(model) < before


@pytest.mark.parametrize("method", METHODS)
def test_parameter_groups(method):
    """Optimizer groups with different lr; the surgeon built on the same groups still takes
    global inner products (same direction as a surgeon on the flat list)."""
    model, twin = Toy(), Toy()
    groups = [
        {"params": [model.w1, model.b1], "lr": 0.1},
        {"params": [model.w2, model.aux_only, model.unused], "lr": 0.01},
    ]
    surgeon = FACTORIES[method](groups)
    opt = torch.optim.SGD(groups, lr=1.0)
    flat_surgeon = FACTORIES[method](twin.parameters())
    for step in range(4):
        opt.zero_grad()
        surgeon.backward(*losses(model, *batch(step)))
        flat_surgeon.backward(*losses(twin, *batch(step)))
        for p, q in zip(model.parameters(), twin.parameters()):
            if p.grad is None:
                assert q.grad is None
            else:
                torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
        old = {
            n: (p.detach().clone(), None if p.grad is None else p.grad.clone())
            for n, p in model.named_parameters()
        }
        opt.step()
        with torch.no_grad():
            for p, q in zip(model.parameters(), twin.parameters()):
                q.copy_(p)
        for name, lr in (("w1", 0.1), ("b1", 0.1), ("w2", 0.01), ("aux_only", 0.01)):
            value, grad = old[name]
            torch.testing.assert_close(getattr(model, name).detach(), value - lr * grad)
    assert len(surgeon.param_groups) == 2


@pytest.mark.parametrize("method", METHODS)
def test_clip_grad_norm_after_backward(method):
    model = Toy()
    surgeon = FACTORIES[method](model.parameters())
    surgeon.backward(*losses(model, *batch(0)))
    params = [p for p in model.parameters() if p.grad is not None]
    direction = flat([p.grad for p in params])
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
    clipped = flat([p.grad for p in params])
    assert float(total) == pytest.approx(float(direction.norm()), rel=1e-5)
    assert float(direction.norm()) > 1e-2  # so that clipping did something
    assert float(clipped.norm()) == pytest.approx(1e-3, rel=1e-4)
    cos = float(clipped @ direction) / float(clipped.norm() * direction.norm())
    assert cos == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- state


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _trajectory(method: str, steps: int, stop_at: int | None = None):
    model = Toy()
    surgeon = FACTORIES[method](model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    directions = []
    for step in range(steps):
        if step == stop_at:
            saved = _roundtrip(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "surgeon": surgeon.state_dict(),
                }
            )
            model = Toy(seed=99)  # a fresh instance with other values, then loaded
            model.load_state_dict(saved["model"])
            surgeon = FACTORIES[method](model.parameters(), lam=123.0)
            surgeon.load_state_dict(saved["surgeon"])
            if "lam" in ALL[method].hyperparameters:
                assert surgeon.lam == LAM
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            opt.load_state_dict(saved["opt"])
        opt.zero_grad()
        surgeon.backward(*losses(model, *batch(step)))
        directions.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])
        opt.step()
    return directions, surgeon


@pytest.mark.parametrize("method", METHODS)
def test_state_round_trip_continues_bit_identically(method):
    straight, s1 = _trajectory(method, 6)
    resumed, s2 = _trajectory(method, 6, stop_at=3)
    for step, (a, b) in enumerate(zip(straight, resumed)):
        for x, y in zip(a, b):
            assert (x is None and y is None) or torch.equal(x, y), f"step {step} differs"
    d1, d2 = s1.state_dict(), s2.state_dict()
    assert d1["step"] == d2["step"] == 6
    assert d1["state"].keys() == d2["state"].keys()
    for i in d1["state"]:
        for k in d1["state"][i]:
            assert torch.equal(d1["state"][i][k], d2["state"][i][k])
            assert d1["state"][i][k].dtype == d2["state"][i][k].dtype


@pytest.mark.parametrize("method", METHODS)
def test_gradient_accumulation_equals_one_big_batch(method):
    k = 4
    whole, micro = Toy(dtype=torch.float64), Toy(dtype=torch.float64)
    s_whole = FACTORIES[method](whole.parameters())
    s_micro = FACTORIES[method](micro.parameters())
    for step in range(3):
        x, y = batch(step, n=32, dtype=torch.float64)
        s_whole.backward(*losses(whole, x, y))
        before = [None if p.grad is None else p.grad.clone() for p in micro.parameters()]
        for j in range(k):
            sl = slice(8 * j, 8 * (j + 1))
            s_micro.backward(*losses(micro, x[sl], y[sl], scale=1 / k), accumulate=j < k - 1)
            if j < k - 1:
                assert s_micro.pending_micro_batches
                for p, b in zip(micro.parameters(), before):  # .grad untouched until the last call
                    assert (p.grad is None and b is None) or torch.equal(p.grad, b)
        assert not s_micro.pending_micro_batches
        for p, q in zip(whole.parameters(), micro.parameters()):
            assert (p.grad is None) == (q.grad is None)
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14)
        with torch.no_grad():  # same SGD step on both, from the whole-batch direction
            for p, q in zip(whole.parameters(), micro.parameters()):
                if p.grad is not None:
                    p.sub_(0.1 * p.grad)
                    q.copy_(p)
    assert s_micro.step_count == s_whole.step_count == 3
    _assert_same_state(s_micro, s_whole, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- partial graphs


def _index(model: Toy, name: str) -> int:
    return [n for n, _ in model.named_parameters()].index(name)


@pytest.mark.parametrize("method", METHODS)
def test_parameter_reached_only_by_aux_gets_zero_main_gradient(method):
    model = Toy(dtype=torch.float64)
    surgeon = FACTORIES[method](model.parameters())
    reference = FACTORIES[method](model.parameters())
    main, aux = losses(model, *batch(0, dtype=torch.float64))
    params = list(model.parameters())
    g_main = torch.autograd.grad(main, params, retain_graph=True, allow_unused=True)
    g_aux = torch.autograd.grad(aux, params, retain_graph=True, allow_unused=True)
    i = _index(model, "aux_only")
    assert g_main[i] is None and g_aux[i] is not None
    explicit = [
        torch.zeros_like(p) if (g is None and a is not None) else g
        for g, a, p in zip(g_main, g_aux, params)
    ]
    expected = _combine(reference, explicit, list(g_aux), main)
    surgeon.backward(main, aux)
    torch.testing.assert_close(model.aux_only.grad, expected[i], rtol=1e-12, atol=0)
    if method == "mixed":
        torch.testing.assert_close(model.aux_only.grad, LAM * (model.aux_only.detach() - 1))
    for buffer in _state_buffers(surgeon).get(i, {}).values():  # e.g. main-gradient EMAs
        assert torch.equal(buffer, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("method", METHODS)
def test_parameter_reached_by_neither_loss_is_left_alone(method):
    model = Toy()
    surgeon = FACTORIES[method](model.parameters())
    sentinel = torch.full((2,), 7.0)
    model.unused.grad = sentinel
    i = _index(model, "unused")
    for step in range(3):
        surgeon.backward(*losses(model, *batch(step)))
        assert model.unused.grad is sentinel and torch.equal(sentinel, torch.full((2,), 7.0))
        for buffer in _state_buffers(surgeon).get(i, {}).values():  # created as zeros, kept
            assert torch.equal(buffer, torch.zeros(2))
    main, aux = losses(model, *batch(5))
    params = list(model.parameters())
    g_main = list(torch.autograd.grad(main, params, retain_graph=True, allow_unused=True))
    g_aux = list(torch.autograd.grad(aux, params, allow_unused=True))
    assert _combine(surgeon, g_main, g_aux, main)[i] is None


@pytest.mark.parametrize("method", METHODS)
def test_frozen_parameters(method):
    model, twin = Toy(), Toy()
    model.b1.requires_grad_(False)
    twin.b1.requires_grad_(False)
    surgeon = FACTORIES[method](model.parameters())
    trainable = FACTORIES[method]([p for p in twin.parameters() if p.requires_grad])
    for step in range(3):
        surgeon.backward(*losses(model, *batch(step)))
        trainable.backward(*losses(twin, *batch(step)))
        assert model.b1.grad is None
        for name, p in model.named_parameters():
            q = getattr(twin, name)
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                assert torch.equal(p.grad, q.grad), name
    for buffer in _state_buffers(surgeon).get(_index(model, "b1"), {}).values():
        assert torch.equal(buffer, torch.zeros(8))


@pytest.mark.parametrize("method", METHODS)
def test_shared_graph_equals_two_forward_passes(method):
    def run(shared: bool):
        model = Toy(dtype=torch.float64)
        surgeon = FACTORIES[method](model.parameters())
        for step in range(3):
            x, y = batch(step, dtype=torch.float64)
            out = model(x)
            out2 = out if shared else model(x)
            main = ((out - y) ** 2).mean()
            aux = (
                0.5 * model.w1.pow(2).sum() + 0.3 * out2.mean() ** 2
            )  # the aux loss uses the output too
            surgeon.backward(main, aux)
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p.sub_(0.1 * p.grad)
        return [p.detach().clone() for p in model.parameters()], surgeon

    (p1, s1), (p2, s2) = run(True), run(False)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    _assert_same_state(s1, s2, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_combine_equals_backward_and_keeps_its_inputs(method):
    m1, m2 = Toy(), Toy()
    s_backward = FACTORIES[method](m1.parameters())
    s_combine = FACTORIES[method](m2.parameters())
    for step in range(3):
        s_backward.backward(*losses(m1, *batch(step)))
        params = list(m2.parameters())
        main, aux = losses(m2, *batch(step))
        g_main = list(torch.autograd.grad(main, params, retain_graph=True, allow_unused=True))
        g_aux = list(torch.autograd.grad(aux, params, allow_unused=True))
        copies = [[None if g is None else g.clone() for g in gs] for gs in (g_main, g_aux)]
        directions = _combine(s_combine, g_main, g_aux, main)
        for gs, cs in zip((g_main, g_aux), copies):
            for g, c in zip(gs, cs):
                assert (g is None and c is None) or torch.equal(g, c), "combine modified its input"
        for p, d in zip(m1.parameters(), directions):
            assert (p.grad is None) == (d is None)
            if d is not None:
                assert torch.equal(p.grad, d)
        with torch.no_grad():
            for p, q, d in zip(m1.parameters(), m2.parameters(), directions):
                if d is not None:
                    p.sub_(0.1 * d)
                    q.sub_(0.1 * d)
    a, b = s_backward.state_dict(), s_combine.state_dict()
    assert a["step"] == b["step"] == 3
    for i in a["state"]:
        for key in a["state"][i]:
            assert torch.equal(a["state"][i][key], b["state"][i][key])


@pytest.mark.parametrize("foreach", [True, False])
def test_bfloat16_parameters_keep_a_float32_ema_through_load(foreach):
    model = Toy().to(torch.bfloat16)
    surgeon = Bloop(model.parameters(), lam=LAM, rho=0.2, foreach=foreach)
    x, y = batch(0, dtype=torch.bfloat16)
    surgeon.backward(*losses(model, x, y))
    assert all(e.dtype == torch.float32 for e in surgeon.ema)
    assert all(p.grad is None or p.grad.dtype == torch.bfloat16 for p in model.parameters())
    state = _roundtrip(surgeon.state_dict())
    for entry in state["state"].values():
        entry["main_grad_ema"] = entry["main_grad_ema"].double()
    fresh = Bloop(model.parameters(), lam=LAM, rho=0.2, foreach=foreach)
    fresh.load_state_dict(state)
    assert all(e.dtype == torch.float32 for e in fresh.ema)
    assert all(torch.equal(a, b) for a, b in zip(fresh.ema, surgeon.ema))


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_gradients_are_safe(method):
    """torch's distributed checkpointing steps once with zero gradients to build the state."""
    model = Toy()
    surgeon = FACTORIES[method](model.parameters())
    zeros = [torch.zeros_like(p) for p in model.parameters()]
    out = _combine(surgeon, zeros, [z.clone() for z in zeros])
    assert all(d is not None and torch.equal(d, torch.zeros_like(d)) for d in out)
    assert surgeon.step_count == 1
    if isinstance(surgeon, Bloop):
        assert all(torch.equal(e, torch.zeros_like(e)) for e in surgeon.ema)
        # A zero EMA never produces 0/0. Paper order: the next step projects on that zero EMA
        # (skipped, Mixed's direction 1 + lam); code order: on 0.2 * g, which removes all of g_aux.
        g = [torch.ones_like(p) for p in model.parameters()]
        d = surgeon.combine(g, g)
        expected = 1 + LAM if surgeon.ema_order == "paper" else 1.0
        assert all(torch.allclose(x, torch.full_like(x, expected), rtol=1e-6, atol=0) for x in d)


# --------------------------------------------------------------------------- K auxiliary losses

LAMS2 = [0.05, 0.02]


def losses2(model: Toy, x, y, scale: float = 1.0):
    """The main loss and TWO aux losses in priority order (the second reaches the output)."""
    main, aux = losses(model, x, y, scale)
    return main, [aux, model(x).pow(2).mean() * scale]


def test_the_table_says_how_many_aux_losses_each_method_takes():
    for name in SINGLE:
        if "lam" not in ALL[name].hyperparameters:
            continue
        with pytest.raises(ValueError, match="auxiliary loss"):
            _make(name, Toy().parameters(), lam=LAMS2)
    for name in MULTI:
        assert _make(name, Toy().parameters(), lam=[0.1, 0.2, 0.3]).num_aux == 3


@pytest.mark.parametrize("method", MULTI)
def test_k_losses_accumulation_equals_one_big_batch(method):
    k = 4
    whole, micro = Toy(dtype=torch.float64), Toy(dtype=torch.float64)
    s_whole = _make(method, whole.parameters(), lam=LAMS2)
    s_micro = _make(method, micro.parameters(), lam=LAMS2)
    for step in range(3):
        x, y = batch(step, n=32, dtype=torch.float64)
        main, aux = losses2(whole, x, y)
        s_whole.backward(main, aux)
        for j in range(k):
            sl = slice(8 * j, 8 * (j + 1))
            main, aux = losses2(micro, x[sl], y[sl], scale=1 / k)
            s_micro.backward(main, aux, accumulate=j < k - 1)
        for p, q in zip(whole.parameters(), micro.parameters()):
            assert (p.grad is None) == (q.grad is None)
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14)
        with torch.no_grad():
            for p, q in zip(whole.parameters(), micro.parameters()):
                if p.grad is not None:
                    p.sub_(0.1 * p.grad)
                    q.copy_(p)
    _assert_same_state(s_micro, s_whole, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", MULTI)
def test_k_losses_state_round_trip_continues_bit_identically(method):
    def run(stop_at: int | None):
        model = Toy()
        surgeon = _make(method, model.parameters(), lam=LAMS2)
        directions = []
        for step in range(5):
            if step == stop_at:
                saved = _roundtrip({"model": model.state_dict(), "surgeon": surgeon.state_dict()})
                model = Toy(seed=99)
                model.load_state_dict(saved["model"])
                surgeon = _make(method, model.parameters(), lam=[1.0, 1.0])
                surgeon.load_state_dict(saved["surgeon"])
            main, aux = losses2(model, *batch(step))
            surgeon.backward(main, aux)
            directions.append(
                [None if p.grad is None else p.grad.clone() for p in model.parameters()]
            )
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p.sub_(0.05 * p.grad)
        return directions

    for a, b in zip(run(None), run(2)):
        for x, y in zip(a, b):
            assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize("method", MULTI)
def test_k_losses_combine_equals_backward(method):
    m1, m2 = Toy(), Toy()
    s_backward = _make(method, m1.parameters(), lam=LAMS2)
    s_combine = _make(method, m2.parameters(), lam=LAMS2)
    for step in range(3):
        main, aux = losses2(m1, *batch(step))
        s_backward.backward(main, aux)
        params = list(m2.parameters())
        main, aux = losses2(m2, *batch(step))
        grads = [
            list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))
            for loss in (main, *aux)
        ]
        directions = s_combine.combine(grads[0], grads[1:])
        for p, q, d in zip(m1.parameters(), m2.parameters(), directions):
            assert (p.grad is None) == (d is None)
            if d is not None:
                assert torch.equal(p.grad, d)
                with torch.no_grad():
                    p.sub_(0.1 * d)
                    q.sub_(0.1 * d)
    _assert_same_state(s_backward, s_combine, rtol=0, atol=0)
