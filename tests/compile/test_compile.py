"""torch.compile: the combination step is one graph (no break, no host sync) and matches eager."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

from torchbloop import Bloop
from torchbloop.compile import bloop_step_, compiled_bloop_step
from torchbloop.functional import (
    _native,
    bloop_direction,
    bloop_update_reference,
    cpu_kernel_available,
    cpu_kernel_status,
    ema_update_,
)


def _lists(seed: int, scale: float = 1.0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 3), (3,), (2, 2, 5)]
    return [[torch.randn(s, generator=g) * scale for s in shapes] for _ in range(3)]


@pytest.fixture(autouse=True)
def _reset_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize("ema_order", ["paper", "code"])
def test_step_is_one_graph_without_breaks(ema_order: str) -> None:
    main, aux, ema = _lists(0)
    explanation = torch._dynamo.explain(bloop_step_)(
        main, aux, ema, lam=0.3, rho=0.1, ema_order=ema_order
    )
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


@pytest.mark.parametrize("ema_order", ["paper", "code"])
@pytest.mark.parametrize(
    "ema_scale", [1.0, 0.0]
)  # 0: the degenerate case is a torch.where, no branch
def test_fullgraph_step_equals_eager(ema_order: str, ema_scale: float) -> None:
    main, aux, ema = _lists(1)
    ema = [e * ema_scale for e in ema]
    eager_ema = [e.clone() for e in ema]
    expected = bloop_step_(main, aux, eager_ema, lam=0.3, rho=0.1, ema_order=ema_order)  # type: ignore[arg-type]
    step = compiled_bloop_step(backend="aot_eager")
    got = step(main, aux, ema, lam=0.3, rho=0.1, ema_order=ema_order)
    for a, b in zip(got.direction, expected.direction):
        torch.testing.assert_close(a, b)
    for a, b in zip(ema, eager_ema):
        torch.testing.assert_close(a, b)
    assert (
        bool(got.skipped) == bool(expected.skipped) == (ema_scale == 0.0 and ema_order == "paper")
    )


def test_functional_direction_and_ema_update_compile_fullgraph() -> None:
    """The two core functions on their own, as the surgeon calls them."""

    def step(
        m: list[torch.Tensor], a: list[torch.Tensor], e: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        d = bloop_direction(m, a, e, lam=0.5, out=a).direction
        ema_update_(e, m, rho=0.2)
        return d

    main, aux, ema = _lists(2)
    ref_aux, ref_ema = [t.clone() for t in aux], [t.clone() for t in ema]
    expected = step(main, ref_aux, ref_ema)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(main, aux, ema)
    for a, b in zip(got + ema, expected + ref_ema):
        torch.testing.assert_close(a, b)


def _train(compiled: bool, backend: str, steps: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 1))
    forward = torch.compile(model, backend=backend) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    surgeon = Bloop(model.parameters(), lam=0.2, rho=0.3)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x, xa = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
        opt.zero_grad()
        main = forward(x).pow(2).mean()
        aux = (forward(xa) - 1).pow(2).mean()
        surgeon.backward(main=main, aux=aux)
        opt.step()
    assert surgeon.ema is not None
    return [p.detach().clone() for p in model.parameters()] + surgeon.ema


def test_compiled_model_training_equals_eager() -> None:
    for a, b in zip(_train(True, "aot_eager"), _train(False, "aot_eager")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_inductor_step_and_model_equal_eager() -> None:
    """Real code generation (C++ on CPU): slower to compile, so outside the fast suite."""
    for a, b in zip(_train(True, "inductor"), _train(False, "inductor")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    main, aux, ema = _lists(3)
    eager_ema = [e.clone() for e in ema]
    expected = bloop_step_(main, [t.clone() for t in aux], eager_ema, lam=0.3, rho=0.1)
    for cpu_kernel in (True, False):
        main_k, aux_k, ema_k = (
            [t.clone() for t in main],
            [t.clone() for t in aux],
            [t.clone() for t in ema],
        )
        step = compiled_bloop_step(cpu_kernel=cpu_kernel)
        got = step(main_k, aux_k, ema_k, lam=0.3, rho=0.1, out=aux_k)
        for a, b in zip(got.direction + ema_k, expected.direction + eager_ema):
            torch.testing.assert_close(a, b)


needs_kernel = pytest.mark.skipif(not cpu_kernel_available(), reason=cpu_kernel_status())


def _count_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the kernel's inner-product passes (one per step through the kernel)."""
    calls: list[int] = []
    real = _native.gram
    monkeypatch.setattr(_native, "gram", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@needs_kernel
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("ema_order", ["paper", "code"])
def test_compiled_step_calls_the_cpu_kernel(
    backend: str, ema_order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU the compiled step runs the fused kernel as a custom op, in one graph."""
    main, aux, ema = _lists(2)
    want_dir, want_ema = bloop_update_reference(
        main, aux, ema, lam=0.3, rho=0.1, ema_order=ema_order
    )  # type: ignore[arg-type]
    calls = _count_kernel_calls(monkeypatch)
    step = compiled_bloop_step(backend=backend)
    got = step(main, aux, ema, lam=0.3, rho=0.1, ema_order=ema_order, out=aux)
    assert calls == [1]
    assert all(d is a for d, a in zip(got.direction, aux, strict=True))
    for a, b in zip(aux + ema, want_dir + want_ema, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=2e-6, atol=2e-6)
    assert got.coef.dtype == torch.float32 and not bool(got.skipped)


def _hyper() -> torch.Tensor:
    return torch.tensor([0.3, 0.1], dtype=torch.float64)


@needs_kernel
def test_compiled_step_with_the_kernel_is_one_graph() -> None:
    main, aux, ema = _lists(3)
    step = compiled_bloop_step(backend="aot_eager")
    explanation = torch._dynamo.explain(step.compiled._torchdynamo_orig_callable)(  # type: ignore[attr-defined]
        main, aux, ema, _hyper(), False, aux, False, None
    )
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    ops = [str(n.target) for g in explanation.graphs for n in g.graph.nodes]
    assert any("bloop_update_cpu_" in op for op in ops), ops


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("ema_order", ["paper", "code"])
def test_compiled_step_without_the_kernel(
    monkeypatch: pytest.MonkeyPatch, foreach: bool, ema_order: str
) -> None:
    main, aux, ema = _lists(4)
    want_dir, want_ema = bloop_update_reference(
        main, aux, ema, lam=0.3, rho=0.1, ema_order=ema_order
    )  # type: ignore[arg-type]
    calls = _count_kernel_calls(monkeypatch)
    step = compiled_bloop_step(backend="aot_eager", cpu_kernel=False, foreach=foreach)
    got = step(main, aux, ema, lam=0.3, rho=0.1, out=aux, ema_order=ema_order)
    assert calls == [] and all(d is a for d, a in zip(got.direction, aux, strict=True))
    for a, b in zip(aux + ema, want_dir + want_ema, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=2e-6, atol=2e-6)
    explanation = torch._dynamo.explain(step.compiled._torchdynamo_orig_callable)(  # type: ignore[attr-defined]
        main, aux, ema, _hyper(), ema_order == "code", aux, foreach, None
    )
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@needs_kernel
def test_compiled_kernel_op_falls_back_on_non_contiguous_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The op checks what the kernel can take at run time; the rest goes through torch ops."""
    main, aux, ema = _lists(5)
    main = [m.t() if m.dim() == 2 else m for m in main]
    aux = [a.t() if a.dim() == 2 else a for a in aux]
    ema = [e.t().contiguous() if e.dim() == 2 else e for e in ema]
    want_dir, want_ema = bloop_update_reference(main, aux, ema, lam=0.3, rho=0.1)
    calls = _count_kernel_calls(monkeypatch)
    step = compiled_bloop_step(backend="aot_eager")
    step(main, aux, ema, lam=0.3, rho=0.1, out=aux)
    assert calls == []
    for a, b in zip(aux + ema, want_dir + want_ema, strict=True):
        torch.testing.assert_close(a.double(), b.double(), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize(
    "cpu_kernel",
    [pytest.param(True, marks=needs_kernel, id="kernel"), pytest.param(False, id="torch-ops")],
)
@pytest.mark.parametrize("ema_order", ["paper", "code"])
def test_no_recompile_with_fresh_lists_and_a_lam_schedule(cpu_kernel: bool, ema_order: str) -> None:
    """50 steps, new gradient lists every step, lam and rho changing every step: one compile.

    Before: every call recompiled (a guard on the id of the gradient list) and every new lam or
    rho value specialised the graph; with ``fullgraph=True`` the 9th was a hard error.
    """
    torch._dynamo.utils.counters.clear()
    step = compiled_bloop_step(backend="aot_eager", cpu_kernel=cpu_kernel)
    ema = _lists(99)[2]
    ref_ema = [e.clone() for e in ema]
    for i in range(50):
        main, aux, _ = _lists(i)
        lam, rho = 0.05 + 0.01 * i, 0.02 + 0.003 * i
        want_dir, ref_ema = bloop_update_reference(
            main, aux, ref_ema, lam=lam, rho=rho, ema_order=ema_order
        )  # type: ignore[arg-type]
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            got = step(main, aux, ema, lam=lam, rho=rho, ema_order=ema_order, out=aux)
        if i % 7 == 0 or i == 49:
            for a, b in zip(got.direction + ema, want_dir + ref_ema, strict=True):
                torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-5)
    stats = torch._dynamo.utils.counters["stats"]
    assert stats["unique_graphs"] == 1, dict(stats)
