"""A fused CPU kernel for Bloop's step, compiled on first use (optional; torch ops otherwise).

Eager torch ops run one kernel per operation: Bloop's step is five of them (two inner products,
an add, an ``addcmul``, a ``lerp``), and on one CPU core that arithmetic, not memory traffic,
sets the pace. ``bloop_cpu.c`` does the same work in two loops over each tensor (inner products;
then direction and EMA update), so each buffer crosses the memory bus about once per loop.

The C file is compiled with the system C compiler the first time it is needed (about a second),
cached under ``$TORCHBLOOP_CACHE`` (default ``~/.cache/torchbloop``) keyed by a hash of the
source, the flags and the compiler, and loaded with :mod:`ctypes`; the calls release the GIL.
If there is no compiler, the build fails, or ``TORCHBLOOP_NATIVE=0`` is set, :func:`library`
returns ``None`` and callers keep the torch-op paths (same results within rounding). Only
plain contiguous CPU float32/float64 tensors are handled; see :func:`usable`.
"""

from __future__ import annotations

import array
import ctypes
import hashlib
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Prepared",
    "available",
    "combine",
    "dots",
    "library",
    "prepare",
    "status",
    "usable",
    "use_cpu_kernel",
]

_SOURCE = Path(__file__).with_name("bloop_cpu.c")
_DTYPES = {torch.float32: 0, torch.float64: 1}
_MIN_PER_THREAD = 1 << 20
"""Elements per thread below which extra threads cost more than they save."""

_lock = threading.Lock()
_state: dict[str, object] = {}


def _flags() -> list[str]:
    flags = ["-O3", "-shared", "-fPIC", "-pthread", "-fno-math-errno"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512") and _is_x86():
        flags += ["-mavx2", "-mfma"]
    return flags


def _is_x86() -> bool:
    import platform

    return platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def _cache_dir() -> Path:
    root = os.environ.get("TORCHBLOOP_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torchbloop"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _target(cc: str, flags: list[str]) -> Path:
    """The cached library's path: keyed by the source, the flags and the compiler's version."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    key = hashlib.sha256(
        _SOURCE.read_bytes() + repr((flags, version.stdout, sys.platform)).encode()
    ).hexdigest()[:16]
    return _cache_dir() / f"bloop_cpu_{key}.so"


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    flags = _flags()
    target = _target(cc, flags)
    if target.exists():
        try:
            return _declare(ctypes.CDLL(str(target)))
        except OSError:  # unreadable or foreign file under our name: build it again
            pass
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(
            [cc, *flags, str(_SOURCE), "-o", str(built)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{cc} failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: concurrent processes may race here
    return _declare(ctypes.CDLL(str(target)))


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Sets the argument types of the two entry points of ``bloop_cpu.c``."""
    i64, ptr, dbl, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int
    lib.torchbloop_dots.argtypes = [cint, i64, ptr, ptr, ptr, ptr, dbl, cint, cint, ptr]
    lib.torchbloop_dots.restype = cint
    lib.torchbloop_combine.argtypes = [cint, i64, *[ptr] * 5, dbl, dbl, dbl, cint, cint]
    lib.torchbloop_combine.restype = cint
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel, building it on the first call; ``None`` when unavailable."""
    lib = _state.get("lib")
    if lib is not None or "error" in _state:  # built, or failed: decided once per process
        return lib  # type: ignore[return-value]
    with _lock:
        if "lib" in _state or "error" in _state:
            return _state.get("lib")  # type: ignore[return-value]
        if os.environ.get("TORCHBLOOP_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _state["error"] = "disabled by TORCHBLOOP_NATIVE"
            return None
        try:
            _state["lib"] = _build()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _state["error"] = str(exc)
            return None
        return _state["lib"]  # type: ignore[return-value]


def use_cpu_kernel(enabled: bool) -> bool:
    """Turns the fused CPU kernel on or off for this process; returns the previous setting.

    On by default (unless ``TORCHBLOOP_NATIVE=0``); off, :func:`bloop_update_` runs its
    cache-blocked torch-op paths, with the same results within rounding. Turning it on builds
    the kernel if needed; it stays off when that fails (see :func:`cpu_kernel_status`).

    Example:
        >>> from torchbloop.functional import use_cpu_kernel
        >>> previous = use_cpu_kernel(False)
        >>> _ = use_cpu_kernel(previous)
    """
    previous = not _state.get("off", False)
    _state["off"] = not enabled
    return previous


def available() -> bool:
    """Whether the fused CPU kernel is on and built for this process (builds it if needed).

    Example:
        >>> from torchbloop.functional import cpu_kernel_available, cpu_kernel_status
        >>> cpu_kernel_available() == (cpu_kernel_status() == "fused CPU kernel: loaded")
        True
    """
    return not _state.get("off", False) and library() is not None


def status() -> str:
    """One line saying whether the kernel is in use, and why not when it is not.

    Example:
        >>> from torchbloop.functional import cpu_kernel_status
        >>> cpu_kernel_status().startswith("fused CPU kernel: ")
        True
    """
    if _state.get("off", False):
        return "fused CPU kernel: not used (turned off by use_cpu_kernel(False))"
    if library() is not None:
        return "fused CPU kernel: loaded"
    return f"fused CPU kernel: not used ({_state.get('error')})"


def _reset() -> None:
    """Forget the loaded library and the on/off setting (tests)."""
    with _lock:
        _state.clear()


def usable(*lists: Sequence[Tensor]) -> bool:
    """Whether the kernel handles these lists: aligned contiguous CPU float32/float64 tensors
    of one dtype and equal sizes, none requiring grad, and the kernel is available.

    The checks are C-level ``map`` loops: a few tens of nanoseconds per tensor.
    """
    first = lists[0]
    if not first or first[0].dtype not in _DTYPES:
        return False
    sizes = list(map(Tensor.numel, first))
    dtype = first[0].dtype
    for tensors in lists:
        if len(tensors) != len(first):
            return False
        if tensors is not first and list(map(Tensor.numel, tensors)) != sizes:
            return False
        if set(map(type, tensors)) != {Tensor} or set(map(_dtype, tensors)) != {dtype}:
            return False
        if not all(map(_is_cpu, tensors)) or any(map(_requires_grad, tensors)):
            return False
        if not all(map(Tensor.is_contiguous, tensors)):
            return False
    return available()


_dtype = operator.attrgetter("dtype")
_is_cpu = operator.attrgetter("is_cpu")
_requires_grad = operator.attrgetter("requires_grad")


class Prepared(NamedTuple):
    """Data pointers and sizes of the three lists, gathered once per step for both passes."""

    dtype: int
    n_tensors: int
    total: int
    sizes: array.array[int]
    main: array.array[int]
    aux: array.array[int]
    ema: array.array[int]


def prepare(main: Sequence[Tensor], aux: Sequence[Tensor], ema: Sequence[Tensor]) -> Prepared:
    """Gathers the pointers of lists that satisfy :func:`usable`; the tensors must stay alive
    (and in place) until the passes that use the result have run."""
    sizes = array.array("q", map(Tensor.numel, ema))
    return Prepared(
        _DTYPES[ema[0].dtype],
        len(ema),
        sum(sizes),
        sizes,
        array.array("q", map(Tensor.data_ptr, main)),
        array.array("q", map(Tensor.data_ptr, aux)),
        array.array("q", map(Tensor.data_ptr, ema)),
    )


def _address(values: array.array[int]) -> int:
    return values.buffer_info()[0]


def _threads(total: int) -> int:
    return max(1, min(torch.get_num_threads(), total // _MIN_PER_THREAD))


def dots(lists: Prepared, *, rho: float | None = None) -> tuple[float, float]:
    """``(<aux, ema>, <ema, ema>)`` summed over the lists, in double.

    With ``rho`` given, ``ema <- lerp(ema, main, rho)`` first (in the same loop) and the inner
    products are those of the updated EMA (Bloop's "code" order).
    """
    lib = library()
    assert lib is not None
    result = (ctypes.c_double * 2)()
    lib.torchbloop_dots(
        lists.dtype,
        lists.n_tensors,
        _address(lists.sizes),
        _address(lists.aux),
        _address(lists.ema),
        _address(lists.main),
        float(rho if rho is not None else 0.0),
        int(rho is not None),
        _threads(lists.total),
        ctypes.addressof(result),
    )
    return result[0], result[1]


def combine(lists: Prepared, *, lam: float, ncoef: float, rho: float | None = None) -> None:
    """``aux <- main + lam * aux + ncoef * ema`` (the direction, written over ``aux``), then
    ``ema <- lerp(ema, main, rho)`` if ``rho`` is given (Bloop's "paper" order)."""
    lib = library()
    assert lib is not None
    lib.torchbloop_combine(
        lists.dtype,
        lists.n_tensors,
        _address(lists.sizes),
        _address(lists.main),
        _address(lists.aux),
        _address(lists.ema),
        _address(lists.aux),
        float(lam),
        float(ncoef),
        float(rho if rho is not None else 0.0),
        int(rho is not None),
        _threads(lists.total),
    )
