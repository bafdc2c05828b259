"""SWORD zText reading, OSIS stripping and the KJV alignment, on a written fixture module."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from torchbloop.experiments.data import DataNotFoundError, Verse, load_bible_parallel
from torchbloop.experiments.data._kjv import KJV_BOOKS, kjv_layout
from torchbloop.experiments.data._sword import read_ztext, strip_osis

MODULES = ("engKJV2006eb", "spaRV1909eb")


def test_kjv_table() -> None:
    assert len(KJV_BOOKS) == 66
    assert sum(len(ch) for _, ch in KJV_BOOKS) == 1189
    assert sum(sum(ch) for _, ch in KJV_BOOKS) == 31102
    books = dict(KJV_BOOKS)
    assert books["Ps"][118] == 176 and len(books["Ps"]) == 150
    assert books["Gen"][0] == 31 and books["Rev"][-1] == 21
    assert len(kjv_layout("ot")) == 2 + 39 + 929 + 23145
    with pytest.raises(ValueError, match="Invalid testament='apocrypha'"):
        kjv_layout("apocrypha")


@pytest.mark.parametrize(
    ("osis", "plain"),
    [
        ('In the <w lemma="strong:H7225">beginning</w> God. ', "In the beginning God."),
        ('light.<note placement="foot"><reference>1.4 </reference>Heb. between</note> ', "light."),
        ("a<note>x<note>nested</note>y</note>b", "ab"),
        ('a<note n="1"/>b', "ab"),
        ('<title type="main">Genesis</title> <div sID="x"/>Words', "Words"),
        (
            '<title canonical="true" type="psalm">A Psalm of David.</title> Lord',
            "A Psalm of David. Lord",
        ),
        ("fish&apos;s   belly\n&amp; <lb/>more", "fish's belly & more"),
        ('<chapter n="2" osisID="Gen.2"/> ', ""),
    ],
)
def test_strip_osis(osis: str, plain: str) -> None:
    assert strip_osis(osis) == plain


def test_read_ztext_round_trip(make: SimpleNamespace, tmp_path: Path) -> None:
    slots = ["", "header", "", "α β", "x" * 300, "", "last"]
    make.ztext(tmp_path, "nt", slots, per_block=3)
    assert read_ztext(tmp_path, "nt") == [s.encode() for s in slots]
    (tmp_path / "nt.bzv").write_bytes((tmp_path / "nt.bzv").read_bytes()[:-3])
    with pytest.raises(ValueError, match="not multiples"):
        read_ztext(tmp_path, "nt")


def _module_texts(lang: str, empty: set[tuple[str, int, int]]) -> dict[str, list[str]]:
    out = {}
    for testament in ("ot", "nt"):
        slots: list[str] = []
        for where in kjv_layout(testament):
            if where is None:
                slots.append(f'<chapter osisID="{testament}"/> ' if len(slots) > 1 else "")
            elif where in empty:
                slots.append("")
            else:
                book, c, v = where
                note = '<note type="x">ignored</note>' if v == 2 else ""
                slots.append(f'<w lemma="s:1">{lang}</w> {book} {c}:{v}{note} ')
        out[testament] = slots
    return out


def _write_bible(make: SimpleNamespace, root: Path, empty_es: set[tuple[str, int, int]]) -> None:
    no_gaps: set[tuple[str, int, int]] = set()
    for module, lang, empty in ((MODULES[0], "en", no_gaps), (MODULES[1], "es", empty_es)):
        for testament, slots in _module_texts(lang, empty).items():
            make.ztext(root / "bible" / module, testament, slots, per_block=500)


def test_bible_parallel_alignment(make: SimpleNamespace, tmp_path: Path) -> None:
    _write_bible(make, tmp_path, {("Jonah", 1, 17)})
    everything = load_bible_parallel(tmp_path, drop_misaligned=False)
    assert len(everything) == 31101
    assert everything[0] == Verse("Gen", 1, 1, "en Gen 1:1", "es Gen 1:1")
    assert everything[1] == Verse("Gen", 1, 2, "en Gen 1:2", "es Gen 1:2")
    assert everything[-1] == Verse("Rev", 22, 21, "en Rev 22:21", "es Rev 22:21")
    assert all(v.en[3:] == v.es[3:] == f"{v.book} {v.chapter}:{v.verse}" for v in everything)
    assert ("Jonah", 1, 17) not in {v[:3] for v in everything}
    kept = load_bible_parallel(tmp_path)
    chapters = {v[:2] for v in kept}
    # Jonah 1 (verse missing) and Jonah 2 (possibly shifted) are dropped, Jonah 3 stays.
    assert ("Jonah", 1) not in chapters and ("Jonah", 2) not in chapters
    assert ("Jonah", 3) in chapters and ("Obad", 1) in chapters
    assert len(kept) == 31102 - 17 - 10


def test_bible_wrong_versification_and_missing(make: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="fetch bible"):
        load_bible_parallel(tmp_path)
    _write_bible(make, tmp_path, set())
    make.ztext(tmp_path / "bible" / MODULES[1], "nt", ["", "x", "y"])
    with pytest.raises(ValueError, match="has 3 entries, the KJV versification needs 8246"):
        load_bible_parallel(tmp_path)
