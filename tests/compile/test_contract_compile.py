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
