"""The fused C kernel (``torchbloop.functional._native``) equals float64 references.

The kernel is built with the system C compiler on first use. Where there is none these tests
skip, except under CI (``CI=true``), where the kernel must build: CI measures and ships it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from torchbloop.functional import _native, bloop_update_
from torchbloop.functional._fused import bloop_update_reference
from torchbloop.functional._native import _build

if os.environ.get("CI", "").lower() == "true":
    assert _native.available(), _native.status()
needs_kernel = pytest.mark.skipif(not _native.available(), reason=_native.status())
_BUILT = _build.library()  # the library in the user's cache, copied into fresh caches

# Sizes around the vector width (8 float32 / 4 float64 lanes, loops of 2 vectors), the slice
# of 512 elements a row of products runs over, the chunk of 4096 elements summed in vector
# lanes, and empty or scalar tensors. 3 threads split this inside tensors.
SHAPES = [(3,), (), (0,), (16,), (17,), (511,), (4095,), (4096,), (2, 4097), (9000,), (31,)]
DTYPES = [torch.float32, torch.float64]


def _lists(dtype: torch.dtype, seed: int, n: int = 3, shapes: list[tuple[int, ...]] = SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(n)]


def _tol(dtype: torch.dtype) -> float:
    return 2e-6 if dtype == torch.float32 else 1e-13


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor], dtype: torch.dtype) -> None:
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and a.shape == b.shape
        torch.testing.assert_close(a.double(), b.double(), rtol=_tol(dtype), atol=_tol(dtype))


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads"])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Runs the kernel on 1 or 3 threads (ranges then split inside tensors)."""
    count = int(request.param)
    monkeypatch.setattr(_native, "_threads", lambda total: count)
    return count


def _pairs(n: int, seed: int) -> list[tuple[int, int]]:
    """A random selection of pairs over n lists: both orders, repeats, squares."""
    g = torch.Generator().manual_seed(seed)
    every = [(i, j) for i in range(n) for j in range(i, n)]
    keep = [p for p, r in zip(every, torch.rand(len(every), generator=g)) if r < 0.6] or every[:1]
    flips = torch.rand(len(keep), generator=g) < 0.5
    chosen = [(j, i) if f else (i, j) for (i, j), f in zip(keep, flips)]
    return chosen + chosen[:1]


def _block_of(seed: int, n_blocks: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_blocks, (len(SHAPES),), generator=g).tolist()


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_lists", range(1, 9))
@pytest.mark.parametrize("n_blocks", [None, 3])
def test_gram_equals_reference(threads, dtype, n_lists, n_blocks) -> None:
    lists = _lists(dtype, n_lists, n_lists)
    pairs = _pairs(n_lists, n_lists + 10)
    blocks = _block_of(n_lists, n_blocks) if n_blocks else [0] * len(SHAPES)
    assert _native.usable(lists)
    if n_blocks:
        got = _native.gram(lists, pairs, block_of=blocks, n_blocks=n_blocks)
    else:
        got = _native.gram(lists, pairs)
    assert got.dtype == torch.float64 and got.shape == (n_blocks or 1, len(pairs))
    for b in range(n_blocks or 1):
        for p, (i, j) in enumerate(pairs):
            terms = [
                (x.double() * y.double()).sum()
                for x, y, k in zip(lists[i], lists[j], blocks)
                if k == b
            ]
            scale = [(x.double() * y.double()).abs().sum() for x, y in zip(lists[i], lists[j])]
            want = float(sum(terms, torch.tensor(0.0, dtype=torch.float64)))
            bound = 5 * _tol(dtype) * float(sum(scale)) + 1e-300
            assert abs(float(got[b, p]) - want) <= bound, (b, (i, j), float(got[b, p]), want)


def _outputs(inputs, n_out: int, seed: int):
    """n_out output lists: some are input lists (aliases), the others fresh tensors."""
    g = torch.Generator().manual_seed(seed)
    aliased = torch.randperm(len(inputs), generator=g).tolist()
    outputs = []
    for o in range(n_out):
        if o < len(aliased) and torch.rand(1, generator=g) < 0.6:
            outputs.append(inputs[aliased[o]])
        else:
            outputs.append([torch.full_like(t, float("nan")) for t in inputs[0]])
    return outputs


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in", range(1, 9))
@pytest.mark.parametrize("n_out", range(1, 5))
@pytest.mark.parametrize("blocked", [False, True])
def test_lincomb_equals_reference(threads, dtype, n_in, n_out, blocked) -> None:
    inputs = _lists(dtype, 100 + n_in, n_in)
    outputs = _outputs(inputs, n_out, n_in * 10 + n_out)
    n_blocks = 3 if blocked else 1
    g = torch.Generator().manual_seed(n_in * 7 + n_out)
    coefs = torch.randn(n_blocks, n_out, n_in, generator=g, dtype=torch.float64)
    blocks = _block_of(n_in + n_out, n_blocks) if blocked else [0] * len(SHAPES)
    before = [[t.double().clone() for t in x] for x in inputs]
    assert _native.usable(inputs + outputs)
    if blocked:
        _native.lincomb(inputs, outputs, coefs, block_of=blocks)
    else:
        _native.lincomb(inputs, outputs, coefs)
    written = {id(y) for y in outputs}
    for o, y in enumerate(outputs):
        for t, b in enumerate(blocks):
            c = coefs[b, o].to(dtype).double()  # the kernel applies the coefficients in dtype
            want = sum(c[i] * before[i][t] for i in range(n_in))
            scale = sum(c[i].abs() * before[i][t].abs() for i in range(n_in))
            assert y[t].dtype == dtype
            err = (y[t].double() - want).abs()
            assert bool((err <= 4 * _tol(dtype) * scale + 1e-300).all()), (o, t)
    for x, old in zip(inputs, before):  # inputs not written over are untouched
        if id(x) not in written:
            assert all(torch.equal(a.double(), b) for a, b in zip(x, old))


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1, 3], ids=["aligned", "offset-1", "offset-3"])
def test_lincomb_streams_large_outputs_exactly(threads, dtype, offset) -> None:
    """Above STREAM_BYTES an output that is no input is written with streaming stores (where
    the CPU has AVX): the values equal the plain stores', for outputs that start on a vector
    boundary and for views that do not (those fall back to plain stores), beside an aliased
    output, in tensors that a thread's range splits."""
    g = torch.Generator().manual_seed(offset)
    width = 4 if dtype == torch.float32 else 8
    n = (18 << 20) // (4 * width) + 37  # 3 inputs + 2 outputs > 16 MiB in all
    shapes = [(n // 3,), (7,), (n - n // 3 - 7,)]
    inputs = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(3)]
    fresh = [torch.full((s[0] + offset,), float("nan"), dtype=dtype)[offset:] for s in shapes]
    before = [[t.clone() for t in x] for x in inputs]
    coefs = torch.randn(1, 2, 3, generator=g, dtype=torch.float64)
    assert _native.usable([*inputs, fresh])
    _native.lincomb(inputs, [fresh, inputs[1]], coefs)
    c = coefs[0].to(dtype)
    for o, y in enumerate([fresh, inputs[1]]):
        for t in range(len(shapes)):
            want = sum(c[o, i].double() * before[i][t].double() for i in range(3))
            scale = sum(c[o, i].double().abs() * before[i][t].double().abs() for i in range(3))
            err = (y[t].double() - want).abs()
            assert bool((err <= 4 * _tol(dtype) * scale + 1e-300).all()), (o, t)


@needs_kernel
@pytest.mark.parametrize("n_lists", [3, 7])
def test_kernel_is_deterministic_for_a_thread_count(threads, n_lists) -> None:
    first = _lists(torch.float32, 3, n_lists)
    second = [[t.clone() for t in x] for x in first]
    pairs = [(i, j) for i in range(n_lists) for j in range(i, n_lists)]
    assert torch.equal(_native.gram(first, pairs), _native.gram(second, pairs))
    coefs = torch.randn(1, 2, n_lists, dtype=torch.float64)
    _native.lincomb(first, first[:2], coefs)
    _native.lincomb(second, second[:2], coefs)
    assert all(torch.equal(a, b) for x, y in zip(first, second) for a, b in zip(x, y))


@needs_kernel
@pytest.mark.parametrize("n_lists", [3, 6])
def test_kernel_propagates_non_finite_values(n_lists) -> None:
    lists = _lists(torch.float32, 5, n_lists)
    lists[0][9][5] = float("nan")
    lists[1][7][100] = float("inf")
    pairs = [(0, 0), (1, 1), (n_lists - 1, n_lists - 1), (0, 1), (1, 2)]
    got = _native.gram(lists, pairs)[0]
    assert torch.isnan(got[0]) and torch.isinf(got[1]) and torch.isfinite(got[2])
    assert torch.isnan(got[3]) and not torch.isfinite(got[4])
    out = [torch.zeros_like(t) for t in lists[0]]
    _native.lincomb(lists, [out, lists[2]], torch.ones(1, 2, n_lists, dtype=torch.float64))
    assert torch.isnan(out[9][5]) and torch.isinf(out[7][100]) and torch.isnan(lists[2][9][5])
    assert torch.isfinite(out[9][4]) and torch.isfinite(out[0]).all()


@needs_kernel
def test_kernel_rejects_bad_arguments() -> None:
    lists = _lists(torch.float32, 6, 3)
    with pytest.raises(ValueError, match="out of range"):
        _native.gram(lists, [(0, 3)])
    with pytest.raises(ValueError, match="out of range"):
        _native.gram(lists, [(0, 1)], block_of=[0] * (len(SHAPES) - 1) + [2], n_blocks=2)
    with pytest.raises(ValueError, match="block_of has"):
        _native.gram(lists, [(0, 1)], block_of=[0], n_blocks=1)
    with pytest.raises(ValueError, match="1 to 8 lists"):
        _native.gram(lists * 3, [(0, 1)])
    with pytest.raises(ValueError, match="shape"):
        _native.lincomb(lists, lists[:1], torch.ones(1, 1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="1 to 4 outputs"):
        _native.lincomb(lists, lists + lists[:2], torch.ones(1, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="pass block_of"):
        _native.lincomb(lists, lists[:1], torch.ones(2, 1, 3, dtype=torch.float64))
    base = torch.zeros(20)
    shifted = [[base[:10]], [base[1:11]]]  # overlapping, not the same memory
    with pytest.raises(ValueError, match="overlaps"):
        _native.lincomb(shifted[:1], shifted[1:], torch.ones(1, 1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="overlaps"):  # one list written twice
        _native.lincomb(lists, [lists[0], lists[0]], torch.ones(1, 2, 3, dtype=torch.float64))
    assert torch.equal(base, torch.zeros(20))


def test_usable_rejects_what_the_kernel_cannot_handle() -> None:
    a = [torch.randn(4, 4)]
    ok = [torch.randn(4, 4)]
    assert not _native.usable([])
    assert not _native.usable([[]])
    assert not _native.usable([[torch.randn(4, dtype=torch.bfloat16)], [torch.randn(4)]])
    assert not _native.usable([a, [torch.randn(4, 4).t()]])
    assert not _native.usable([a, [torch.randn(4, 4, dtype=torch.float64)]])
    assert not _native.usable([a, [torch.randn(15)]])
    assert not _native.usable([a, [torch.randn(4, 4, requires_grad=True)]])
    assert not _native.usable([a, ok, [torch.randn(4, 4), torch.randn(1)]])
    assert not _native.usable([a, [torch.nn.Parameter(torch.randn(4, 4), requires_grad=False)]])
    assert _native.usable([a, ok]) == _native.available()


# K = 1 Bloop through bloop_update_ (the contract's kernel path on CPU) equals the float64 reference.
@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["paper", "code"])
@pytest.mark.parametrize(("lam", "rho"), [(0.4, 0.01), (0.0, 0.5), (2.5, 0.9), (1.0, 1.0)])
def test_bloop_step_through_the_kernel_equals_reference(threads, dtype, order, lam, rho) -> None:
    main, aux, ema = _lists(dtype, 1)
    assert _native.usable([main, aux, ema])
    want_dir, want_ema = bloop_update_reference(main, aux, ema, lam=lam, rho=rho, ema_order=order)
    result = bloop_update_(main, aux, ema, lam=lam, rho=rho, ema_order=order, out=aux)
    assert all(d is a for d, a in zip(result.direction, aux, strict=True))
    _assert_close(aux, want_dir, dtype)
    _assert_close(ema, want_ema, dtype)
    assert result.coef.dtype == dtype and result.coef.dim() == 0
    assert not bool(result.skipped)


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
    assert len(seen) == 1 and seen[0].dtype == torch.float64 and seen[0].shape == (1, 3, 3)
    _assert_close(aux, want_dir, torch.float64)


# Building, caching, and refusing unsafe caches.


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A process state with no kernel loaded and an empty cache; restored afterwards. Yields
    the directory the library goes to."""
    monkeypatch.setenv("TORCHBLOOP_CACHE", str(tmp_path))
    _build.reset()
    yield tmp_path / "native"
    _build.reset()


def _planted(fresh: Path) -> Path:
    """The library this process built, copied to the fresh cache under its cached name (no
    second compilation)."""
    cc = _build._compiler()
    assert cc is not None
    target = _build._target(cc, _build._flags())
    assert target.parent == fresh
    fresh.mkdir(mode=0o700, parents=True)
    assert _BUILT is not None
    shutil.copyfile(_BUILT._name, target)
    os.chmod(target, 0o700)
    return target


def test_disabled_by_environment(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHBLOOP_NATIVE", "0")
    assert _build.library() is None and not _native.available()
    assert "TORCHBLOOP_NATIVE" in _native.status()
    main, aux, ema = _lists(torch.float32, 7)
    assert not _native.usable([main, aux, ema])
    want_dir, want_ema = bloop_update_reference(main, aux, ema, lam=0.4, rho=0.1)
    bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)  # the torch-op paths
    _assert_close(aux, want_dir, torch.float32)
    _assert_close(ema, want_ema, torch.float32)
    assert not fresh.exists()
    with pytest.raises(RuntimeError, match="TORCHBLOOP_NATIVE"):
        _native.gram([main], [(0, 0)])


def test_missing_compiler_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_build, "_compiler", lambda: None)
    assert not _native.available()
    assert "no C compiler" in _native.status()


def test_failed_build_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_build, "_flags", lambda: ["-this-flag-does-not-exist"])
    if _build._compiler() is None:
        pytest.skip("no C compiler")
    assert not _native.available()
    assert "failed" in _native.status()
    assert not list(fresh.iterdir())  # nothing half-written left in the cache


@needs_kernel
def test_build_is_cached_in_a_private_directory(fresh: Path) -> None:
    assert _native.available()
    assert (fresh.stat().st_mode & 0o777) == 0o700
    built = sorted(fresh.glob("fused_cpu_*.so"))
    assert len(built) == 1
    assert (built[0].stat().st_mode & 0o077) == 0
    stamp = built[0].stat().st_mtime_ns
    _build.reset()
    assert _native.available()
    assert built[0].stat().st_mtime_ns == stamp
    assert sorted(fresh.glob("fused_cpu_*.so")) == built


@needs_kernel
def test_use_cpu_kernel_switches_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchbloop.functional import cpu_kernel_available, cpu_kernel_status, use_cpu_kernel

    calls = []
    real = _native.lincomb
    monkeypatch.setattr(_native, "lincomb", lambda *a, **k: calls.append(1) or real(*a, **k))
    main, aux, ema = _lists(torch.float32, 8)
    previous = use_cpu_kernel(False)
    try:
        assert previous is True and not cpu_kernel_available()
        assert "use_cpu_kernel(False)" in cpu_kernel_status()
        assert not _native.usable([main, aux, ema])
        bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)
        assert calls == []
    finally:
        assert use_cpu_kernel(previous) is False
    assert cpu_kernel_available() and cpu_kernel_status() == "fused CPU kernel: loaded"
    bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)
    assert calls == [1]


@needs_kernel
def test_a_broken_cached_file_is_rebuilt(fresh: Path) -> None:
    target = _planted(fresh)
    _build.reset()
    target.write_bytes(b"not a shared library")  # never loaded: a fresh path in a fresh cache
    assert _native.available()
    assert target.read_bytes()[:4] == b"\x7fELF" or sys.platform == "darwin"


def test_an_unwritable_cache_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = fresh.parent / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("TORCHBLOOP_CACHE", str(blocker / "cache"))
    _build.reset()
    assert not _native.available()
    assert "fused CPU kernel: not used" in _native.status()
    main, aux, ema = _lists(torch.float32, 9)
    want_dir, _ = bloop_update_reference(main, aux, ema, lam=0.4, rho=0.1)
    bloop_update_(main, aux, ema, lam=0.4, rho=0.1, out=aux)
    _assert_close(aux, want_dir, torch.float32)


NOBODY = 65534


def _refused(fragment: str) -> None:
    _build.reset()
    assert not _native.available()
    status = _native.status()
    assert status.startswith("fused CPU kernel: not used (refusing"), status
    assert fragment in status, status
    assert not _native.usable(_lists(torch.float32, 10))


@pytest.mark.skipif(not hasattr(os, "chown") or os.getuid() != 0, reason="needs root to chown")
def test_a_cache_directory_of_another_user_is_refused(fresh: Path) -> None:
    fresh.mkdir(mode=0o700)
    os.chown(fresh, NOBODY, -1)
    _refused(f"owned by uid {NOBODY}")
    assert not list(fresh.iterdir())  # nothing built there either


def test_a_cache_directory_writable_by_others_is_refused(fresh: Path) -> None:
    fresh.mkdir(mode=0o700)
    os.chmod(fresh, 0o777)
    _refused("writable by group or others")
    os.chmod(fresh, 0o770)
    _refused("writable by group or others")


def test_a_cache_under_a_world_writable_directory_is_refused(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = fresh.parent / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone could rename our directory away and put theirs instead
    monkeypatch.setenv("TORCHBLOOP_CACHE", str(shared / "cache"))
    _refused("without the sticky bit")
    assert not list(shared.iterdir())  # nothing created there
    os.chmod(shared, 0o777 | 0o1000)  # as /tmp: the sticky bit protects our entries
    if _BUILT is not None:
        _planted(shared / "cache" / "native")
        _build.reset()
        assert _native.available(), _native.status()


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "chown") or os.getuid() != 0, reason="needs root to chown")
def test_a_cached_library_of_another_user_is_refused(fresh: Path) -> None:
    target = _planted(fresh)
    os.chown(target, NOBODY, -1)
    _refused(f"cached library {target}: owned by uid {NOBODY}")


@needs_kernel
def test_a_world_writable_cached_library_is_refused(fresh: Path) -> None:
    target = _planted(fresh)
    os.chmod(target, 0o702)  # o+w
    _refused("writable by group or others")


@needs_kernel
def test_a_linked_cached_library_is_refused(fresh: Path) -> None:
    target = _planted(fresh)
    elsewhere = fresh.parent / "elsewhere.so"
    os.replace(target, elsewhere)
    target.symlink_to(elsewhere)
    _refused("symbolic link")
