"""Building, caching and loading the fused CPU kernel (``fused_cpu.c``), and its on/off switch.

The C file is compiled with the system C compiler the first time it is needed (a few seconds),
cached under ``$TORCHBLOOP_CACHE/native`` (default ``~/.cache/torchbloop/native``) keyed by a hash
of the source, the flags and the compiler, and loaded with :mod:`ctypes`. A process loads a
library only from a directory and a file that it owns and that nobody else can write (a shared
or world-writable cache would let another user plant code every training process runs): the
directory is created private (``0700``), and anything else is refused, with the reason in
:func:`status`. Whenever the kernel cannot be used (no compiler, failed build, refused cache,
``TORCHBLOOP_NATIVE=0``, :func:`use_cpu_kernel`), :func:`library` returns ``None`` and callers
keep the torch-op paths (same results within rounding).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused_cpu.c")

_lock = threading.Lock()
_state: dict[str, object] = {}


class UnsafeCache(RuntimeError):
    """The cache directory or the cached file could be written by another user."""


def _flags() -> list[str]:
    flags = ["-O3", "-shared", "-fPIC", "-pthread", "-fno-math-errno"]
    capability = torch.backends.cpu.get_cpu_capability()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
    if capability in ("AVX2", "AVX512") and x86:
        flags += ["-mavx2", "-mfma"]
    return flags


def _cache_dir() -> Path:
    root = os.environ.get("TORCHBLOOP_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "torchbloop")
    return Path(root) / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _target(cc: str, flags: list[str]) -> Path:
    """The cached library's path: keyed by the source, the flags and the compiler's version."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    key = hashlib.sha256(
        SOURCE.read_bytes() + repr((flags, version.stdout, sys.platform)).encode()
    ).hexdigest()[:16]
    return _cache_dir() / f"fused_cpu_{key}.so"


def _check_private(path: Path, what: str) -> None:
    """Raises :class:`UnsafeCache` unless ``path`` (not a link) is ours and only ours to write."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeCache(f"refusing {what} {path}: it is a symbolic link")
    if info.st_uid != os.getuid():
        raise UnsafeCache(
            f"refusing {what} {path}: owned by uid {info.st_uid}, not by this user "
            f"(uid {os.getuid()})"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCache(
            f"refusing {what} {path}: writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); chmod go-w it"
        )


def _check_parents(directory: Path) -> None:
    """Every directory above the cache must be ours or root's, and nobody else's to rename in
    (group/other-writable only with the sticky bit, as ``/tmp``)."""
    for parent in directory.resolve().parents:
        if not parent.exists():
            continue  # created below, 0700
        info = os.stat(parent)
        if info.st_uid not in (0, os.getuid()):
            raise UnsafeCache(f"refusing cache under {parent}: owned by uid {info.st_uid}")
        open_to_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if open_to_others and not info.st_mode & stat.S_ISVTX:
            raise UnsafeCache(
                f"refusing cache under {parent}: writable by group or others without the "
                f"sticky bit (mode {stat.S_IMODE(info.st_mode):o})"
            )


def _private_dir(directory: Path) -> None:
    """Creates the cache directory ``0700`` if needed (nothing is created under an unsafe parent),
    then checks that it is safe to load from."""
    _check_parents(directory)
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    _check_private(directory, "cache directory")


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    flags = _flags()
    target = _target(cc, flags)
    _private_dir(target.parent)
    if target.exists():
        _check_private(target, "cached library")
        try:
            return _declare(ctypes.CDLL(str(target)))
        except OSError:  # unreadable or truncated file under our name: build it again
            pass
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(
            [cc, *flags, str(SOURCE), "-o", str(built)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{cc} failed: {result.stderr.strip()[-2000:]}")
        os.chmod(built, 0o700)  # whatever the umask: only this user may write it
        os.replace(built, target)  # atomic: concurrent processes may race here
    _check_private(target, "cached library")
    return _declare(ctypes.CDLL(str(target)))


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Sets the argument types of the two entry points of ``fused_cpu.c``."""
    i64, ptr, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    lib.torchbloop_gram.argtypes = [cint, i64, ptr, cint, ptr, cint, ptr, ptr, i64, cint, ptr]
    lib.torchbloop_gram.restype = cint
    lib.torchbloop_lincomb.argtypes = [cint, i64, ptr, cint, ptr, cint, ptr, ptr, ptr, i64, cint]
    lib.torchbloop_lincomb.restype = cint
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

    On by default (unless ``TORCHBLOOP_NATIVE=0``); off, the functional layer runs its torch-op
    paths, with the same results within rounding. Turning it on builds the kernel if needed; it
    stays off when that fails (see :func:`cpu_kernel_status`).

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


def reset() -> None:
    """Forget the loaded library and the on/off setting (tests)."""
    with _lock:
        _state.clear()
