"""The first API's Bloop functions on large lists equal their references, on both paths.

Every test runs twice: with the fused C kernel where it applies, and with it switched off so
that the torch-op path (what runs where no C compiler is found) stays tested.
"""

from __future__ import annotations

import pytest
import torch

from torchbloop.functional import (
    bloop_direction,
    bloop_direction_reference,
    contract,
    ema_update_,
    global_dots,
    global_dots_reference,
    mixed_direction,
    mixed_direction_reference,
)
from torchbloop.functional._fused import bloop_update_, bloop_update_reference

# Shapes straddling the torch-op Gram's chunks: small tensors packed together, large ones
# sliced (the last slice partial), scalars and empty tensors.
CHUNK = 1 << 16
SHAPES = [
    (3,),
    (),
    (CHUNK - 1,),
    (0,),
    (CHUNK * 2 + 5,),
    (CHUNK,),
    (40, 50),
]


@pytest.fixture(autouse=True, params=["native", "torch-ops"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "torch-ops":
        monkeypatch.setattr(contract, "_native_usable", lambda *args: False)
    return str(request.param)


def _lists(dtype: torch.dtype, seed: int) -> tuple[list[torch.Tensor], ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple([torch.randn(s, generator=g, dtype=dtype) for s in SHAPES] for _ in range(3))


def _close(got: list[torch.Tensor], want: list[torch.Tensor], dtype: torch.dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == dtype
        torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_global_dots_equal_reference(dtype: torch.dtype) -> None:
    a, b, _ = _lists(dtype, 0)
    got = global_dots([(a, b), (b, b), (a, a)])
    want = global_dots_reference([(a, b), (b, b), (a, a)])
    torch.testing.assert_close(
        got.double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-3
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_bloop_direction_in_place_equals_reference(dtype: torch.dtype, lam: float) -> None:
    main, aux, ema = _lists(dtype, 1)
    want = bloop_direction_reference(main, aux, ema, lam=lam)
    result = bloop_direction(main, aux, ema, lam=lam, out=aux)
    assert result.direction is aux or all(d is x for d, x in zip(result.direction, aux))
    _close(aux, want, dtype)


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_mixed_direction_in_place_equals_reference(lam: float) -> None:
    main, aux, _ = _lists(torch.float32, 2)
    want = mixed_direction_reference(main, aux, lam=lam)
    mixed_direction(main, aux, lam=lam, out=aux)
    _close(aux, want, torch.float32)


@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bloop_update_equals_reference_and_two_calls(order: str, dtype: torch.dtype) -> None:
    main, aux, ema = _lists(dtype, 3)
    want_dir, want_ema = bloop_update_reference(main, aux, ema, lam=0.4, rho=0.1, ema_order=order)  # type: ignore[arg-type]
    aux2, ema2 = [t.clone() for t in aux], [t.clone() for t in ema]
    # The two calls the surgeon makes, on copies, for comparison.
    if order == "code":
        ema_update_(ema2, main, rho=0.1)
    two = bloop_direction(main, aux2, ema2, lam=0.4, out=aux2)
    if order == "paper":
        ema_update_(ema2, main, rho=0.1)
    result = bloop_update_(main, aux, ema, lam=0.4, rho=0.1, ema_order=order, out=aux)  # type: ignore[arg-type]
    _close(aux, want_dir, dtype)
    _close(ema, want_ema, dtype)
    _close(aux, aux2, dtype)
    torch.testing.assert_close(result.coef, two.coef)
    assert bool(result.skipped) == bool(two.skipped)


def test_bloop_update_skips_projection_on_zero_ema() -> None:
    main, aux, _ = _lists(torch.float32, 4)
    ema = [torch.zeros_like(t) for t in main]
    want = [m + 0.5 * a for m, a in zip(main, aux)]
    result = bloop_update_(main, aux, ema, lam=0.5, rho=0.25, out=aux)
    assert bool(result.skipped) and float(result.coef) == 0.0
    _close(aux, want, torch.float32)
    _close(ema, [0.25 * m for m in main], torch.float32)


def test_bloop_update_falls_back_off_the_fast_path() -> None:
    """Non-contiguous tensors, mixed dtypes and out=None take the multi-tensor code."""
    main, aux, ema = _lists(torch.float32, 5)
    main = [m.t() if m.dim() == 2 else m for m in main]
    aux = [a.t() if a.dim() == 2 else a for a in aux]
    ema = [e.t().contiguous() if e.dim() == 2 else e for e in ema]
    want_dir, want_ema = bloop_update_reference(main, aux, ema, lam=0.4, rho=0.1)
    result = bloop_update_(main, aux, ema, lam=0.4, rho=0.1)
    _close(result.direction, want_dir, torch.float32)
    _close(ema, want_ema, torch.float32)


def test_bloop_update_rejects_unknown_order() -> None:
    main, aux, ema = _lists(torch.float32, 6)
    with pytest.raises(ValueError, match="ema_order"):
        bloop_update_(main, aux, ema, lam=0.4, rho=0.1, ema_order="later")  # type: ignore[arg-type]
