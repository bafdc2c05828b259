"""The surgery contract's torch-op path under ``torch.compile`` for several aux levels (issue 9:
everything that works for K = 1 works for K, torch.compile included)."""

from __future__ import annotations

import pytest
import torch

from torchbloop.functional.bloop import BloopFormula
from torchbloop.functional.contract import SurgeryStep

SHAPES = [(5, 3), (7,)]


def _lists(gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]


@pytest.mark.parametrize("order", ["paper", "code"])
def test_k2_bloop_step_compiles_in_one_graph_and_equals_eager(order: str) -> None:
    gen = torch.Generator().manual_seed(0)
    formula = BloopFormula(order)

    def step(g0, g1, g2, e0, e1, lam1, lam2, rho):  # one step of K = 2 Bloop, direction + EMAs
        s = SurgeryStep(
            formula, [g0, g1, g2], [e0, e1], hyper={"lam": [lam1, lam2], "rho": rho}, kernel=False
        )
        s.gram()
        return s.apply().direction

    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    grads = [_lists(gen) for _ in range(3)]
    emas = [_lists(gen) for _ in range(2)]
    eager_emas = [[t.clone() for t in e] for e in emas]
    # a schedule, given as 0-dim tensors (Python floats that change would be specialised on)
    for values in [(0.3, 0.1, 0.05), (1.5, 0.02, 0.2)]:
        lam1, lam2, rho = (torch.tensor(v, dtype=torch.float64) for v in values)
        want = step(*grads, *eager_emas, lam1, lam2, rho)
        got = compiled(*grads, *emas, lam1, lam2, rho)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        for e, f in zip(emas, eager_emas, strict=True):  # the EMAs were updated alike
            for a, b in zip(e, f, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert counters["stats"]["unique_graphs"] == 1  # the schedule reused the first graph


def test_traced_gram_does_not_grow_with_the_tensor_size() -> None:
    """Under torch.compile the Gram pass is written per tensor (the compiler fuses conversion,
    products and sums), not as the eager path's chunks: the traced graph of a 4M-element
    tensor must be as small as a 4k-element one's (the chunked form traced ~60 chunk copies
    and matmuls, and ran at 28x ``foreach_add_`` instead of ~5x in ``make bench``)."""
    from torchbloop.functional import _gram

    sizes: dict[int, int] = {}

    def counting(gm: torch.fx.GraphModule, example_inputs: object) -> object:
        sizes[len(example_inputs)] = len(gm.graph.nodes)  # type: ignore[arg-type]
        return gm.forward

    def nodes(numel: int) -> int:
        torch._dynamo.reset()
        sizes.clear()
        x, y = torch.randn(numel), torch.randn(numel)
        fn = torch.compile(lambda a, b: _gram.gram([[a], [b]]), backend=counting, fullgraph=True)
        got = fn(x, y)
        want = torch.tensor([[x.double() @ x.double(), x.double() @ y.double()]] * 1)
        torch.testing.assert_close(got[0, 0], want[0], rtol=1e-12, atol=1e-9)
        return sum(sizes.values())

    small, large = nodes(4096), nodes(4 << 20)
    assert large == small, (small, large)
