"""Jane Austen's six completed novels, from the R data of the ``janeaustenr`` package.

Debian's ``r-cran-janeaustenr`` ships the texts as an R lazy-load database
(``data/Rdata.rdb`` + ``Rdata.rdx``): one character vector per novel, one element per line of the
Project Gutenberg text (empty strings for blank lines). This module reads it without R.
"""

from __future__ import annotations

import os

from ._cache import require_files
from ._rdata import RList, read_rdb

__all__ = ["AUSTEN_TITLES", "load_austen"]

# janeaustenr variable -> title, as janeaustenr::austen_books() names them (publication order).
AUSTEN_TITLES = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}


def load_austen(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Load the six novels as plain text.

    Args:
        root: data root; see :func:`~torchbloop.experiments.data.dataset_dir`
            (``TORCHBLOOP_AUSTEN`` points at a folder holding ``Rdata.rdb`` and ``Rdata.rdx``).

    Returns:
        Title -> full text, the vector's lines joined with ``"\\n"`` (no trailing newline), in
        the order of :data:`AUSTEN_TITLES`; variables the database holds beyond those six are
        returned under their R name.

    Raises:
        ValueError: when the database is malformed or a variable is not a character vector.
        DataNotFoundError: when the files are absent.
    """
    rdb, rdx = require_files("austen", ["Rdata.rdb", "Rdata.rdx"], root)
    variables = read_rdb(rdb, rdx)
    order = [v for v in AUSTEN_TITLES if v in variables] + sorted(
        v for v in variables if v not in AUSTEN_TITLES
    )
    books: dict[str, str] = {}
    for var in order:
        lines = variables[var]
        if not isinstance(lines, RList) or not all(isinstance(s, str | None) for s in lines):
            raise ValueError(f"{rdb}: variable {var!r} is not a character vector")
        books[AUSTEN_TITLES.get(var, var)] = "\n".join(s or "" for s in lines)
    return books
