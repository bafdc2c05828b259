"""The code snippets of docs/production.md run as written and do what the text says.

A snippet is the ``python`` code block right after a ``<!-- production-snippet: NAME -->`` line.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import torchbloop.compile
from torchbloop import Bloop

ROOT = Path(__file__).resolve().parents[2]
_DISTRIBUTED = str(ROOT / "tests" / "distributed")
if _DISTRIBUTED not in sys.path:  # the launcher and its workers (spawned ranks import them too)
    sys.path.insert(0, _DISTRIBUTED)

from _docs_workers import STEPS, ddp_snippet, net_and_data  # noqa: E402
from _launch import run_ranks  # noqa: E402


def snippet(name: str) -> str:
    text = (ROOT / "docs" / "production.md").read_text()
    found = re.findall(
        rf"<!-- production-snippet: {re.escape(name)} -->\n```python\n(.*?)\n```", text, re.S
    )
    assert len(found) == 1, f"docs/production.md has {len(found)} snippets named {name!r}"
    return found[0]


def test_compiled_step_snippet_trains_like_bloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled-step recipe (EMA from the first main gradient, direction into ``.grad``)
    follows ``Bloop`` step for step. Compiled with ``aot_eager`` here (Inductor: tests/compile)."""
    original = torchbloop.compile.compiled_bloop_step
    monkeypatch.setattr(
        torchbloop.compile,
        "compiled_bloop_step",
        lambda **kw: original(**{"backend": "aot_eager", **kw}),
    )
    ns: dict[str, Any] = {}
    exec(compile(snippet("compiled-step"), "production.md:compiled-step", "exec"), ns)

    # The same model and batches, trained by the surgeon.
    torch.manual_seed(0)
    model = copy.deepcopy(ns["model"])
    for module in model.modules():  # re-initialised exactly as the snippet's construction did
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    surgeon = Bloop(params, lam=0.1, rho=0.01)
    first = [p.detach().clone() for p in params]
    for x, y in ns["batches"]:
        main = nn.functional.mse_loss(model(x), y)
        aux = sum(p.pow(2).sum() for p in params) / 2
        opt.zero_grad()
        surgeon.backward(main=main, aux=aux)
        opt.step()
    assert surgeon.step_count == len(ns["batches"])
    for a, b, start in zip(ns["params"], params, first):
        assert not torch.equal(b, start)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert surgeon.ema is not None
    for a, b in zip(ns["ema"], surgeon.ema):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.distributed
def test_ddp_snippet_runs_on_cpu_with_gloo() -> None:
    """As written, on 2 CPU ranks (no CUDA): every rank ends equal, and equal to one process."""
    results = run_ranks(ddp_snippet, snippet("ddp"))
    assert {r["wrapped"] for r in results} == {"DistributedDataParallel"}
    for a, b in zip(results[0]["params"], results[1]["params"]):
        assert torch.equal(a, b)
    # one process on the whole batches, same recipe without DDP
    net, batches = net_and_data(0, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    surgeon = Bloop(net.parameters(), lam=0.1)
    for x, y in batches:
        opt.zero_grad()
        main = nn.functional.mse_loss(net(x), y)
        aux = sum(p.pow(2).sum() for p in net.parameters()) / 2
        surgeon.backward(main=main, aux=aux)
        opt.step()
    for rank in results:
        assert rank["steps"] == STEPS
        for a, b in zip(rank["params"], net.parameters()):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
        for a, b in zip(rank["ema"], surgeon.ema or []):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
