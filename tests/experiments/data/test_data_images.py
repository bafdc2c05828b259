"""Fashion-MNIST idx files and the MNIST-5k CSV, on fixtures written in the real formats."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from torchbloop.experiments.data import DataNotFoundError, load_fashion_mnist, load_mnist5k

RNG = np.random.default_rng(0)


def _fashion(
    make: SimpleNamespace, folder: Path, prefix: str, n: int
) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = RNG.integers(0, 10, size=n).astype(np.uint8)
    make.idx_images(folder / f"{prefix}-images-idx3-ubyte.gz", images)
    make.idx_labels(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return images, labels


@pytest.mark.parametrize(("split", "prefix", "n"), [("train", "train", 7), ("test", "t10k", 3)])
def test_fashion_mnist_round_trip(
    make: SimpleNamespace, tmp_path: Path, split: str, prefix: str, n: int
) -> None:
    images, labels = _fashion(make, tmp_path / "fashion_mnist", prefix, n)
    x, y = load_fashion_mnist(split, root=tmp_path)  # type: ignore[arg-type]
    assert x.dtype == torch.uint8 and x.shape == (n, 28, 28)
    assert y.dtype == torch.int64 and y.shape == (n,)
    assert np.array_equal(x.numpy(), images)
    assert np.array_equal(y.numpy(), labels)


def test_fashion_mnist_env_var_points_at_own_copy(
    make: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = _fashion(make, tmp_path / "elsewhere", "t10k", 2)
    monkeypatch.setenv("TORCHBLOOP_FASHION_MNIST", str(tmp_path / "elsewhere"))
    x, _ = load_fashion_mnist("test")
    assert np.array_equal(x.numpy(), images)


@pytest.mark.parametrize(
    ("which", "match"),
    [
        ("images", "bad magic number 2049, expected 2051"),
        ("labels", "bad magic number 2051, expected 2049"),
    ],
)
def test_fashion_mnist_bad_magic(
    make: SimpleNamespace, tmp_path: Path, which: str, match: str
) -> None:
    folder = tmp_path / "fashion_mnist"
    images, labels = _fashion(make, folder, "train", 2)
    if which == "images":
        make.idx_images(folder / "train-images-idx3-ubyte.gz", images, magic=2049)
    else:
        make.idx_labels(folder / "train-labels-idx1-ubyte.gz", labels, magic=2051)
    with pytest.raises(ValueError, match=match):
        load_fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_truncated_and_mismatched(make: SimpleNamespace, tmp_path: Path) -> None:
    folder = tmp_path / "fashion_mnist"
    _fashion(make, folder, "train", 3)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-1]))
    with pytest.raises(ValueError, match="header says 3x28x28"):
        load_fashion_mnist("train", root=tmp_path)
    _fashion(make, folder, "train", 3)
    make.idx_labels(folder / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="3 images, 4 labels"):
        load_fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_missing_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="fetch fashion_mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="Invalid split='val'"):
        load_fashion_mnist("val", root=tmp_path)  # type: ignore[arg-type]


def test_mnist5k_round_trip_keeps_file_order(make: SimpleNamespace, tmp_path: Path) -> None:
    images = RNG.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 2)
    (tmp_path / "mnist5k").mkdir()
    (tmp_path / "mnist5k" / "mnist_5k.csv.gz").write_bytes(make.mnist_csv_gz(images, labels))
    x, y = load_mnist5k(root=tmp_path)
    assert x.dtype == torch.uint8 and x.shape == (20, 28, 28)
    assert y.dtype == torch.int64
    assert np.array_equal(x.numpy(), images)
    assert y.tolist() == labels.tolist()


def test_mnist5k_malformed(make: SimpleNamespace, tmp_path: Path) -> None:
    (tmp_path / "mnist5k").mkdir()
    path = tmp_path / "mnist5k" / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(ValueError, match="row 0 has 3 fields, expected 785"):
        load_mnist5k(root=tmp_path)
    path.write_bytes(gzip.compress((",".join(["300"] * 784 + ["1"]) + "\n").encode()))
    with pytest.raises(ValueError, match=r"outside 0\.\.255"):
        load_mnist5k(root=tmp_path)
    path.unlink()
    with pytest.raises(DataNotFoundError, match="TORCHBLOOP_MNIST5K"):
        load_mnist5k(root=tmp_path)
