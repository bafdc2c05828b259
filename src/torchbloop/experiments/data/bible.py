"""An English-Spanish parallel Bible: King James (2006 SWORD edition) and Reina-Valera 1909.

Both come as SWORD ``zText`` modules with the KJV versification (Debian ``sword-text-kjv`` and
``sword-text-sparv``), so index slot *i* of one module is the same verse as slot *i* of the other.
Slots are mapped to ``(book, chapter, verse)`` with the KJV canon in ``_kjv.py``.

The alignment is not perfect: in 18 places the Spanish module leaves a KJV verse slot empty
because the Reina-Valera divides the text differently (e.g. KJV Jonah 1:17 is RV Jonah 2:1), and
then either the neighbouring verse holds two verses' text or the following chapter is shifted by
one. By default every chapter with a verse missing in one language is dropped together with the
next chapter of the same book (23 chapters, 568 verse pairs of the real data).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ._cache import require_files
from ._kjv import kjv_layout
from ._sword import read_ztext, strip_osis

__all__ = ["MODULES", "Verse", "load_bible_parallel"]

MODULES = {"en": "engKJV2006eb", "es": "spaRV1909eb"}
_FILES = [
    f"{m}/{t}.{e}" for m in MODULES.values() for t in ("ot", "nt") for e in ("bzs", "bzv", "bzz")
]


class Verse(NamedTuple):
    """One verse in both languages; ``book`` is the OSIS book id (``"Gen"``, ..., ``"Rev"``)."""

    book: str
    chapter: int
    verse: int
    en: str
    es: str


def load_bible_parallel(
    root: str | os.PathLike[str] | None = None, drop_misaligned: bool = True
) -> list[Verse]:
    """Load the verses that have text in both the KJV and the Reina-Valera 1909.

    Args:
        root: data root; see :func:`~torchbloop.experiments.data.dataset_dir`
            (``TORCHBLOOP_BIBLE`` points at a folder holding ``engKJV2006eb/`` and
            ``spaRV1909eb/``, each with ``{ot,nt}.{bzs,bzv,bzz}``).
        drop_misaligned: drop each chapter where a verse is empty in one language, and the next
            chapter of its book (see the module docstring); ``False`` keeps every verse with text
            in both.

    Returns:
        Verses in canonical order (Genesis 1:1 to Revelation 22:21), OSIS markup stripped,
        notes dropped. With the real modules: 30516 verses (31084 with text in both of the KJV
        canon's 31102 when ``drop_misaligned=False``).

    Raises:
        ValueError: when a module's index does not have the KJV layout's number of slots.
        DataNotFoundError: when the files are absent.
    """
    paths = require_files("bible", _FILES, root)
    folder = paths[0].parent.parent
    verses: list[Verse] = []
    broken: set[tuple[str, int]] = set()
    for testament in ("ot", "nt"):
        layout = kjv_layout(testament)
        texts = {}
        for lang, module in MODULES.items():
            slots = read_ztext(folder / module, testament)
            if len(slots) != len(layout):
                raise ValueError(
                    f"{folder / module}/{testament}.bzv has {len(slots)} entries, "
                    f"the KJV versification needs {len(layout)}"
                )
            texts[lang] = slots
        for where, en_raw, es_raw in zip(layout, texts["en"], texts["es"], strict=True):
            if where is None:
                continue
            en = strip_osis(en_raw.decode("utf-8"))
            es = strip_osis(es_raw.decode("utf-8"))
            if en and es:
                verses.append(Verse(*where, en=en, es=es))
            else:
                broken.update({(where[0], where[1]), (where[0], where[1] + 1)})
    if drop_misaligned:
        verses = [v for v in verses if (v.book, v.chapter) not in broken]
    return verses
