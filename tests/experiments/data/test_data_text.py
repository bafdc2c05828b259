"""Austen (R lazy-load database), Shakespeare, stdlib source and the byte helpers."""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from torchbloop.experiments.data import (
    DataNotFoundError,
    encode_bytes,
    load_austen,
    load_python_source,
    load_shakespeare,
    split_text,
)
from torchbloop.experiments.data._rdata import read_rdb, unserialize

NOVELS: dict[str, list[str | None]] = {
    "emma": ["EMMA", "", "By Jane Austen", "", "Emma Woodhouse, handsome, clever, and rich"],
    "persuasion": ["PERSUASION", None, "Sir Walter Elliot, of Kellynch Hall — £2000", ""],
    "juvenilia": ["Love and Freindship"],
}


def test_austen_round_trip(make: SimpleNamespace, tmp_path: Path) -> None:
    (tmp_path / "austen").mkdir()
    make.rdata(tmp_path / "austen", NOVELS)
    books = load_austen(root=tmp_path)
    # Known variables get their janeaustenr titles, in publication order; others keep their name.
    assert list(books) == ["Emma", "Persuasion", "juvenilia"]
    assert books["Emma"] == "EMMA\n\nBy Jane Austen\n\nEmma Woodhouse, handsome, clever, and rich"
    assert books["Persuasion"] == "PERSUASION\n\nSir Walter Elliot, of Kellynch Hall — £2000\n"
    assert books["juvenilia"] == "Love and Freindship"


def test_read_rdb_returns_vectors_with_na(make: SimpleNamespace, tmp_path: Path) -> None:
    make.rdata(tmp_path, {"x": ["a", None, "ü"]})
    variables = read_rdb(tmp_path / "Rdata.rdb", tmp_path / "Rdata.rdx")
    assert list(variables) == ["x"]
    assert list(variables["x"]) == ["a", None, "ü"]


def test_unserialize_rejects_other_formats(make: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="not an R XDR serialisation"):
        unserialize(b"A\n3\n")
    with pytest.raises(ValueError, match="unsupported R SEXP type 25"):
        unserialize(make.r_serialize(struct.pack(">i", 25)))
    with pytest.raises(ValueError, match="truncated"):
        unserialize(make.r_serialize(struct.pack(">iii", 9, 10, 0)))


def test_austen_corrupt_chunk_size(make: SimpleNamespace, tmp_path: Path) -> None:
    make.rdata(tmp_path, {"emma": ["EMMA"]})
    rdb = tmp_path / "Rdata.rdb"
    data = rdb.read_bytes()
    rdb.write_bytes(struct.pack(">I", 1 + struct.unpack(">I", data[:4])[0]) + data[4:])
    with pytest.raises(ValueError, match="header says"):
        read_rdb(rdb, tmp_path / "Rdata.rdx")
    # An index that is not a named list.
    raw = make.r_serialize(struct.pack(">ii", 16, 0))
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="not an R lazy-load index"):
        read_rdb(rdb, tmp_path / "Rdata.rdx")
    assert zlib.decompress(data[4:])[:2] == b"X\n"


def test_austen_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHBLOOP_AUSTEN", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match=r"nowhere.*Rdata\.rdb"):
        load_austen()


def test_shakespeare_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "hamlet_gut.txt").write_bytes(b"To be, or not to be\r\nthat is the question\r\n")
    (folder / "sonnets_gut.txt").write_text("Shall I compare thee\n")
    (folder / "hamlet_gut_f.txt").write_text("First Folio: not loaded")
    monkeypatch.setenv("TORCHBLOOP_SHAKESPEARE", str(folder))
    works = load_shakespeare()
    assert works == {
        "hamlet": "To be, or not to be\nthat is the question\n",
        "sonnets": "Shall I compare thee\n",
    }
    with pytest.raises(DataNotFoundError, match="shakespeare"):
        load_shakespeare(root=tmp_path)


def test_python_source_is_deterministic_and_bounded() -> None:
    head = load_python_source(20_000)
    assert len(head.encode("utf-8")) <= 20_000
    assert len(head.encode("utf-8")) > 19_000
    assert head.startswith("# file: ")
    assert head == load_python_source(20_000)
    assert "site-packages" not in head
    assert load_python_source(0) == ""
    with pytest.raises(ValueError, match="Invalid max_bytes=-1"):
        load_python_source(-1)
    assert sys.version_info >= (3, 10)


def test_encode_bytes_and_split_text() -> None:
    x = encode_bytes("aé\n")
    assert x.dtype == torch.uint8
    assert x.tolist() == [97, 195, 169, 10]
    assert encode_bytes("").numel() == 0
    text = "x" * 95 + "y" * 5
    train, held = split_text(text, 0.05)
    assert (train, held) == ("x" * 95, "y" * 5)
    assert split_text(text, 0.0) == (text, "")
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="Invalid eval_fraction"):
            split_text(text, bad)
