"""A small reader for R's XDR serialisation and lazy-load databases (``.rdb``/``.rdx``).

Enough of R's format to read data packages without R: vectors (logical, integer, double,
character, list), pairlists, symbols, references and attributes. An ``.rdx`` index is a gzip or
zlib-compressed serialisation of ``list(variables=, references=, compressed=)``; each variable maps
to ``c(offset, length)`` of a chunk in the ``.rdb`` file: a 4-byte big-endian uncompressed size,
then the compressed serialisation (zlib, or for ``compressed`` 2/3 a type byte and bzip2/xz).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import zlib
from typing import Any

__all__ = ["RList", "read_rdb", "unserialize"]

_NIL, _REF = 254, 255
_SPECIAL = {242, 241, 253, 252, 251, 247, 250, 249, 248, 246, 245, 244, 243}
_PAIRLISTS = {2, 3, 5, 6, 17}  # LISTSXP, CLOSXP, PROMSXP, LANGSXP, DOTSXP
_LATIN1, _HAS_ATTR, _HAS_TAG = 1 << 2, 1 << 9, 1 << 10


class RList(list[Any]):
    """An R vector as a Python list, with its R attributes (``names``, ...) in ``attrs``."""

    attrs: dict[str, Any]

    def __init__(self, items: list[Any], attrs: dict[str, Any] | None = None) -> None:
        super().__init__(items)
        self.attrs = attrs or {}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []

    def i32(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return int(value)

    def length(self) -> int:
        n = self.i32()
        if n == -1:  # long vector: two 32-bit halves
            hi, lo = self.i32(), self.i32()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        return n

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"R serialisation truncated at byte {self.pos} (+{n})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def attrs(self, flags: int) -> dict[str, Any]:
        value = self.item() if flags & _HAS_ATTR else None
        return dict(value) if isinstance(value, dict) else {}

    def item(self) -> Any:
        flags = self.i32()
        kind = flags & 0xFF
        if kind == _NIL or kind in _SPECIAL:
            return None
        if kind == _REF:
            index = flags >> 8 or self.i32()
            return self.refs[index - 1]
        if kind == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if kind in _PAIRLISTS:
            out: dict[str, Any] = {}
            while kind in _PAIRLISTS:
                self.attrs(flags)
                tag = self.item() if flags & _HAS_TAG else None
                out[str(tag) if tag is not None else f"[{len(out)}]"] = self.item()
                flags = self.i32()
                kind = flags & 0xFF
            if kind != _NIL:
                raise ValueError(f"R pairlist ends with SEXP type {kind}, expected NULL")
            return out
        if kind == 9:  # CHARSXP
            n = self.i32()
            if n == -1:
                return None  # NA_character_
            return self.raw(n).decode("latin-1" if (flags >> 12) & _LATIN1 else "utf-8")
        if kind in (10, 13):  # LGLSXP, INTSXP
            n = self.length()
            ints = list(struct.unpack(f">{n}i", self.raw(4 * n)))
            return RList([None if v == -(2**31) else v for v in ints], self.attrs(flags))
        if kind == 14:  # REALSXP
            n = self.length()
            return RList(list(struct.unpack(f">{n}d", self.raw(8 * n))), self.attrs(flags))
        if kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.length()
            items = [self.item() for _ in range(n)]
            return RList(items, self.attrs(flags))
        raise ValueError(f"unsupported R SEXP type {kind} at byte {self.pos - 4}")


def unserialize(data: bytes) -> Any:
    """Decode one R XDR serialisation (format version 2 or 3, as ``saveRDS`` writes).

    Args:
        data: the uncompressed bytes, starting with ``b"X\\n"``.

    Returns:
        The object: :class:`RList` for vectors (NA as ``None``), ``dict`` for pairlists,
        ``str`` for symbols, ``None`` for ``NULL``.

    Raises:
        ValueError: for another format (ASCII, native binary) or an unsupported type.
    """
    if data[:2] != b"X\n":
        raise ValueError(f"not an R XDR serialisation: starts with {data[:2]!r}, expected b'X\\n'")
    reader = _Reader(data)
    reader.pos = 2
    version = reader.i32()
    reader.i32(), reader.i32()  # writer's R version, minimal reader version
    if version == 3:
        reader.raw(reader.i32())  # native encoding
    elif version != 2:
        raise ValueError(f"unsupported R serialisation version {version}, expected 2 or 3")
    return reader.item()


def _decompress_chunk(chunk: bytes, method: int) -> bytes:
    if len(chunk) < 4:
        raise ValueError(f"rdb chunk of {len(chunk)} bytes is too short")
    (size,) = struct.unpack(">I", chunk[:4])
    body = chunk[4:]
    if method in (2, 3):
        kind, body = body[:1], body[1:]
        if kind == b"2":
            body = bz2.decompress(body)
        elif kind == b"X":
            body = lzma.decompress(body)
        elif kind == b"Z":
            body = zlib.decompress(body)
        elif kind != b"0":
            raise ValueError(f"unknown rdb compression type {kind!r}")
    else:
        body = zlib.decompress(body)
    if len(body) != size:
        raise ValueError(f"rdb chunk inflated to {len(body)} bytes, its header says {size}")
    return body


def read_rdb(rdb: str | os.PathLike[str], rdx: str | os.PathLike[str]) -> dict[str, Any]:
    """Read every variable of an R lazy-load database.

    Args:
        rdb: the ``.rdb`` file (concatenated compressed chunks).
        rdx: the ``.rdx`` index.

    Returns:
        Variable name -> unserialised value, in index order.

    Raises:
        ValueError: when the index or a chunk is malformed.
    """
    with open(rdx, "rb") as f:
        raw = f.read()
    index_bytes = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _decompress_chunk(raw, 1)
    index = unserialize(index_bytes)
    if not isinstance(index, RList) or "names" not in index.attrs:
        raise ValueError(f"{rdx}: not an R lazy-load index (expected a named list)")
    fields = dict(zip(index.attrs["names"], index, strict=True))
    variables = fields.get("variables")
    if not isinstance(variables, RList):
        raise ValueError(f"{rdx}: the index has no 'variables' list")
    compressed = fields.get("compressed")
    method = int(compressed[0]) if isinstance(compressed, RList) and compressed else 1
    with open(rdb, "rb") as f:
        db = f.read()
    out: dict[str, Any] = {}
    for name, (offset, length) in zip(variables.attrs.get("names", []), variables, strict=True):
        if offset + length > len(db):
            raise ValueError(f"{rdb}: variable {name!r} lies past the end of the file")
        out[name] = unserialize(_decompress_chunk(db[offset : offset + length], method))
    return out
