"""The fused C kernel (``torchbloop.functional._native``) equals the float64 reference.

The kernel is built with the system C compiler on first use. Where there is none these tests
skip, except under CI (``CI=true``), where the kernel must build: CI measures and ships it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from torchbloop.functional import _native, bloop_update_
from torchbloop.functional._fused import bloop_update_reference

if os.environ.get("CI", "").lower() == "true":
    assert _native.available(), _native.status()
needs_kernel = pytest.mark.skipif(not _native.available(), reason=_native.status())

# Sizes around the vector width (8 float32 / 4 float64 lanes, loops of 2 vectors), the chunk
# of 4096 elements summed in vector lanes, and empty or scalar tensors.
SHAPES = [(3,), (), (0,), (16,), (17,), (4095,), (4096,), (2, 4097), (9000,), (31,)]


def _lists(dtype: torch.dtype, seed: int, shapes: list[tuple[int, ...]] = SHAPES):
    g = torch.Generator().manual_seed(seed)
    return tuple([torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(3))


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor], dtype: torch.dtype) -> None:
    tol = 2e-6 if dtype == torch.float32 else 1e-13
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and a.shape == b.shape
        torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads"])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Runs the kernel on 1 or 3 threads (ranges then split inside tensors)."""
    count = int(request.param)
    monkeypatch.setattr(_native, "_threads", lambda total: count)
    return count


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize(("lam", "rho"), [(0.4, 0.01), (0.0, 0.5), (2.5, 0.9), (1.0, 1.0)])
def test_kernel_equals_reference(threads, dtype, order, lam, rho) -> None:
    main, aux, ema = _lists(dtype, 1)
    assert _native.usable(main, aux, ema)
    want_dir, want_ema = bloop_update_reference(main, aux, ema, lam=lam, rho=rho, ema_order=order)
    result = bloop_update_(main, aux, ema, lam=lam, rho=rho, ema_order=order, out=aux)
    assert all(d is a for d, a in zip(result.direction, aux, strict=True))
    _assert_close(aux, want_dir, dtype)
    _assert_close(ema, want_ema, dtype)
    assert result.coef.dtype == dtype and result.coef.dim() == 0
    assert not bool(result.skipped)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_inner_products(threads, dtype) -> None:
    main, aux, ema = _lists(dtype, 2)
    cross, sq = _native.dots(_native.prepare(main, aux, ema))
    want_cross = sum(float((a.double() * e.double()).sum()) for a, e in zip(aux, ema))
    want_sq = sum(float((e.double() ** 2).sum()) for e in ema)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert cross == pytest.approx(want_cross, rel=tol, abs=tol)
    assert sq == pytest.approx(want_sq, rel=tol)
    # "code" order: the EMA is updated first, and the products are those of the new EMA
    new = [e + 0.25 * (m - e) for m, e in zip(main, ema)]
    cross, sq = _native.dots(_native.prepare(main, aux, ema), rho=0.25)
    _assert_close(ema, [t.double() for t in new], dtype)
    assert sq == pytest.approx(sum(float((e.double() ** 2).sum()) for e in new), rel=tol)
    assert cross == pytest.approx(
        sum(float((a.double() * e.double()).sum()) for a, e in zip(aux, new)), rel=tol, abs=tol
    )


@needs_kernel
def test_kernel_is_deterministic_for_a_thread_count(threads) -> None:
    first = _lists(torch.float32, 3)
    second = tuple([t.clone() for t in x] for x in first)
    a = bloop_update_(*first[:2], first[2], lam=0.3, rho=0.1, out=first[1])
    b = bloop_update_(*second[:2], second[2], lam=0.3, rho=0.1, out=second[1])
    assert torch.equal(a.coef, b.coef)
    assert all(torch.equal(x, y) for x, y in zip(first[1] + first[2], second[1] + second[2]))


@needs_kernel
def test_kernel_propagates_non_finite_values() -> None:
    main, aux, ema = _lists(torch.float32, 5)
    main[3][5] = float("nan")
    bloop_update_(main, aux, ema, lam=0.5, rho=0.1, out=aux)
    assert torch.isnan(aux[3][5]) and torch.isnan(ema[3][5])
    assert torch.isfinite(aux[3][4]) and torch.isfinite(aux[0]).all()


@needs_kernel
def test_kernel_handles_a_reduce_hook() -> None:
    """``reduce`` (the process-group sum of sharded inner products) sees float64 products."""
    main, aux, ema = _lists(torch.float64, 6)
    seen = []

    def double_it(dots: torch.Tensor) -> torch.Tensor:
        seen.append(dots.clone())
        return dots * 2  # as if a second, identical shard were summed in: same coefficient

    want_dir, _ = bloop_update_reference(main, aux, ema, lam=0.7, rho=0.1)
    bloop_update_(main, aux, ema, lam=0.7, rho=0.1, out=aux, reduce=double_it)
    assert len(seen) == 1 and seen[0].dtype == torch.float64 and seen[0].shape == (2,)
    _assert_close(aux, want_dir, torch.float64)


def test_usable_rejects_what_the_kernel_cannot_handle() -> None:
    a = [torch.randn(4, 4)]
    ok = [torch.randn(4, 4)]
    assert not _native.usable([])
    assert not _native.usable([torch.randn(4, dtype=torch.bfloat16)], [torch.randn(4)])
    assert not _native.usable(a, [torch.randn(4, 4).t()])
    assert not _native.usable(a, [torch.randn(4, 4, dtype=torch.float64)])
    assert not _native.usable(a, [torch.randn(15)])
    assert not _native.usable(a, [torch.randn(4, 4, requires_grad=True)])
    assert not _native.usable(a, ok, [torch.randn(4, 4), torch.randn(1)])
    assert _native.usable(a, ok) == _native.available()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A process state with no kernel loaded and an empty cache; restored afterwards."""
    monkeypatch.setenv("TORCHBLOOP_CACHE", str(tmp_path))
    _native._reset()
    yield tmp_path
    _native._reset()


def test_disabled_by_environment(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHBLOOP_NATIVE", "0")
    assert _native.library() is None and not _native.available()
    assert "TORCHBLOOP_NATIVE" in _native.status()
    main, aux, ema = _lists(torch.float32, 7)
    want_dir, want_ema = bloop_update_reference(main, aux, ema, lam=0.4, rho=0.1)
    bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)  # the torch-op paths
    _assert_close(aux, want_dir, torch.float32)
    _assert_close(ema, want_ema, torch.float32)
    assert not list(fresh.iterdir())


def test_missing_compiler_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    assert not _native.available()
    assert "no C compiler" in _native.status()


def test_failed_build_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "_flags", lambda: ["-this-flag-does-not-exist"])
    if _native._compiler() is None:
        pytest.skip("no C compiler")
    assert not _native.available()
    assert "failed" in _native.status()
    assert not list(fresh.iterdir())  # nothing half-written left in the cache


@needs_kernel
def test_build_is_cached(fresh: Path) -> None:
    assert _native.available()
    built = sorted(fresh.glob("bloop_cpu_*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    _native._reset()
    assert _native.available()
    assert built[0].stat().st_mtime_ns == stamp
    assert sorted(fresh.glob("bloop_cpu_*.so")) == built


@needs_kernel
def test_use_cpu_kernel_switches_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchbloop.functional import cpu_kernel_available, cpu_kernel_status, use_cpu_kernel

    calls = []
    real = _native.combine
    monkeypatch.setattr(_native, "combine", lambda *a, **k: calls.append(1) or real(*a, **k))
    main, aux, ema = _lists(torch.float32, 8)
    previous = use_cpu_kernel(False)
    try:
        assert previous is True and not cpu_kernel_available()
        assert "use_cpu_kernel(False)" in cpu_kernel_status()
        assert not _native.usable(main, aux, ema)
        bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)
        assert calls == []
    finally:
        assert use_cpu_kernel(previous) is False
    assert cpu_kernel_available() and cpu_kernel_status() == "fused CPU kernel: loaded"
    bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)
    assert calls == [1]


@needs_kernel
def test_a_broken_cached_file_is_rebuilt(fresh: Path) -> None:
    cc = _native._compiler()
    assert cc is not None
    target = _native._target(cc, _native._flags())
    assert target.parent == fresh
    target.write_bytes(b"not a shared library")  # never loaded: a fresh path in a fresh cache
    assert _native.available()
    assert target.read_bytes()[:4] == b"\x7fELF" or sys.platform == "darwin"


def test_an_unwritable_cache_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = fresh / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("TORCHBLOOP_CACHE", str(blocker / "cache"))
    _native._reset()
    assert not _native.available()
    assert "fused CPU kernel: not used" in _native.status()
    main, aux, ema = _lists(torch.float32, 9)
    want_dir, _ = bloop_update_reference(main, aux, ema, lam=0.4, rho=0.1)
    bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)
    _assert_close(aux, want_dir, torch.float32)
