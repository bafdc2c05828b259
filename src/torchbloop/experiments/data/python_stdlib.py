"""Python source code as a text domain: the running interpreter's own standard library."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

__all__ = ["load_python_source"]

_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}


def _stdlib_files(stdlib: Path) -> list[Path]:
    """The stdlib's ``.py`` files in sorted order, without walking into the skipped folders."""
    files: list[Path] = []
    for folder, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in _SKIP]
        files.extend(Path(folder) / n for n in names if n.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(stdlib).parts)


def load_python_source(max_bytes: int | None = None) -> str:
    """Concatenate the stdlib's ``.py`` files in sorted path order (deterministic per Python version).

    Test suites, ``idlelib`` and installed third-party packages are left out. Each file is preceded
    by a ``# file: <relative path>`` line.

    Args:
        max_bytes: cap on the UTF-8 size of the result (cut at a character boundary, so at most
            ``max_bytes`` bytes); ``None`` reads everything (about 11 MB on CPython 3.11).

    Returns:
        The concatenated source.

    Raises:
        ValueError: for a negative ``max_bytes``.

    Example:
        >>> len(load_python_source(1000)) <= 1000
        True
    """
    if max_bytes is not None and max_bytes < 0:
        raise ValueError(f"Invalid max_bytes={max_bytes}: must be >= 0 or None")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    for path in _stdlib_files(stdlib):
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        chunk = f"# file: {path.relative_to(stdlib).as_posix()}\n{source}\n"
        parts.append(chunk)
        size += len(chunk.encode("utf-8"))
        if max_bytes is not None and size >= max_bytes:
            break
    text = "".join(parts)
    if max_bytes is not None:
        text = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    return text
