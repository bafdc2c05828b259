"""GPU checks (skipped without CUDA): GradScaler + bf16 autocast on one GPU; FSDP2 and DDP with NCCL on two."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _ddp_workers import STEPS as DDP_STEPS
from _fsdp_workers import both, train
from _launch import run_ranks

from torchbloop import Bloop

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")


@cuda
def test_bf16_autocast_grad_scaler_equals_unscaled_on_gpu() -> None:
    results = []
    for use_scaler in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 1)
        ).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        surgeon = Bloop(model.parameters(), lam=0.2, rho=0.1)
        scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12) if use_scaler else None
        for step in range(5):
            g = torch.Generator(device="cuda").manual_seed(step)
            x = torch.randn(64, 32, device="cuda", generator=g)
            opt.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                main = (model(x).float() - 1).pow(2).mean()
            aux = sum(p.pow(2).sum() for p in model.parameters())
            surgeon.backward(main=main, aux=aux, scaler=scaler)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
        assert surgeon.ema is not None
        results.append([p.detach().clone() for p in model.parameters()] + surgeon.ema)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@two_gpus
@pytest.mark.distributed
def test_fsdp2_nccl_equals_single_process(tmp_path: Any) -> None:
    out = run_ranks(both, str(tmp_path), "cuda", backend="nccl")
    for aux_kind in ("decay", "data"):
        reference = train(None, 1, aux_kind)
        for rank_results in out:
            for a, b in zip(rank_results[aux_kind]["params"], reference["params"]):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
            for a, b in zip(rank_results[aux_kind]["ema"], reference["ema"]):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert DDP_STEPS > 0
