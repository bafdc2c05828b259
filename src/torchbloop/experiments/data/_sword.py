"""Read SWORD ``zText`` Bible modules and strip their OSIS markup.

A testament (``ot`` or ``nt``) is three files: ``.bzs``, one 12-byte little-endian entry per
compressed block ``(offset, compressed size, uncompressed size)`` into ``.bzz``, the zlib blocks
themselves; and ``.bzv``, one 10-byte entry per index slot ``(block u32, offset u32, size u16)``
giving where the slot's text lies inside the inflated block.
"""

from __future__ import annotations

import html
import os
import re
import struct
import zlib
from pathlib import Path

__all__ = ["read_ztext", "strip_osis"]

_NOTE = re.compile(r"<note\b[^>]*?/>|<note\b[^>]*>(?:(?!<note\b).)*?</note>", re.DOTALL)
_TITLE = re.compile(r"<title\b(?![^>]*canonical=\"true\")[^>]*>.*?</title>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def read_ztext(folder: str | os.PathLike[str], testament: str) -> list[bytes]:
    """Return the raw bytes of every index slot of one testament of a zText module.

    Args:
        folder: the module folder holding ``{testament}.bzs``, ``.bzv`` and ``.bzz``.
        testament: ``"ot"`` or ``"nt"``.

    Returns:
        One item per ``.bzv`` entry, ``b""`` for empty slots.

    Raises:
        ValueError: when an entry points outside its block or a block does not inflate to its
            recorded size.
    """
    base = Path(folder) / testament
    bzs = base.with_suffix(".bzs").read_bytes()
    bzv = base.with_suffix(".bzv").read_bytes()
    bzz = base.with_suffix(".bzz").read_bytes()
    if len(bzs) % 12 or len(bzv) % 10:
        raise ValueError(
            f"{base}: .bzs/.bzv sizes {len(bzs)}/{len(bzv)} are not multiples of 12/10"
        )
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    inflated: dict[int, bytes] = {}
    out: list[bytes] = []
    for i in range(0, len(bzv), 10):
        block, offset, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0:
            out.append(b"")
            continue
        if block not in inflated:
            if block >= len(blocks):
                raise ValueError(f"{base}.bzv entry {i // 10}: block {block} of {len(blocks)}")
            start, csize, usize = blocks[block]
            data = zlib.decompress(bzz[start : start + csize])
            if len(data) != usize:
                raise ValueError(f"{base}.bzz block {block}: {len(data)} bytes, expected {usize}")
            inflated[block] = data
        data = inflated[block]
        if offset + size > len(data):
            raise ValueError(f"{base}.bzv entry {i // 10} points past the end of block {block}")
        out.append(data[offset : offset + size])
    return out


def strip_osis(text: str) -> str:
    """Reduce OSIS markup to plain text.

    Notes (``<note>...</note>``, nested ones too) and non-canonical titles are dropped with their
    content; every other tag is removed keeping its content; entities are unescaped and
    whitespace runs collapse to one space.

    Example:
        >>> strip_osis('In the <w lemma="x">beginning</w><note n="a">Heb. <i>x</i></note> God. ')
        'In the beginning God.'
    """
    previous = None
    while previous != text:
        previous, text = text, _NOTE.sub("", text)
    text = _TITLE.sub(" ", text)
    text = html.unescape(_TAG.sub("", text))
    return _SPACE.sub(" ", text).strip()
