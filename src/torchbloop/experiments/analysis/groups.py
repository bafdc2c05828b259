"""Records grouped for legends and tables, named and coloured from the method table.

A group is one method (and variant), split by rho when a sweep varies rho for a method that
takes it. Labels and colours come from :data:`torchbloop.methods.METHODS` only; a method missing
from the table (a record from another version) keeps its record name and a grey colour.
No matplotlib here: the CLI and the tables use these without the plotting extra.

Example:
    >>> r = {"spec": {"method": "bloop", "lam": 0.1, "rho": 0.01, "variant": ""}}
    >>> list(group_records([r]))
    ['Bloop']
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ... import methods as method_table
from ..sweep.registry import Record, format_float, lam_levels

UNKNOWN_COLOUR = "0.5"
"""Colour of a method that is not in the table (matplotlib grey)."""


def method_label(method: str) -> str:
    """The table's label of ``method`` (its record name when the table lacks it)."""
    info = method_table.METHODS.get(method)
    return info.label if info else method


def method_colour(method: str) -> str:
    """The table's colour of ``method`` (:data:`UNKNOWN_COLOUR` when the table lacks it)."""
    info = method_table.METHODS.get(method)
    return info.colour if info else UNKNOWN_COLOUR


def takes_rho(method: str) -> bool:
    """Whether the table lists ``rho`` among the method's hyperparameters."""
    info = method_table.METHODS.get(method)
    return info is not None and "rho" in info.hyperparameters


def takes_lam(method: str) -> bool:
    """Whether a sweep's lam axis applies to ``method`` (True for methods not in the table)."""
    info = method_table.METHODS.get(method)
    return info is None or info.takes_lam


def lam_key(record: Record) -> tuple[float, ...]:
    """A sortable, hashable form of the record's lam (one float per aux weight)."""
    return lam_levels(record["spec"]["lam"])


def group_label(record: Record, multi_rho: bool) -> str:
    """Legend label of a record's group: the method's label, its variant, and rho when a
    sweep varies it for a method that takes it."""
    spec = record["spec"]
    label = method_label(spec["method"])
    if spec.get("variant"):
        label += f" ({spec['variant']})"
    if multi_rho and takes_rho(spec["method"]):
        label += f" (rho={format_float(spec['rho'])})"
    return label


def group_records(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records grouped by :func:`group_label`, in table order (variants after the plain
    method), then by rho and lam."""
    rhos = {r["spec"]["rho"] for r in records if takes_rho(r["spec"]["method"])}
    order = {m: i for i, m in enumerate(method_table.METHODS)}

    def key(r: Record) -> tuple[Any, ...]:
        s = r["spec"]
        return (order.get(s["method"], len(order)), s["method"], s.get("variant", ""), s["rho"])

    groups: dict[str, list[Record]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (*key(r), lam_key(r))):
        groups[group_label(r, len(rhos) > 1)].append(r)
    return dict(groups)


def group_method(group: Sequence[Record]) -> str:
    """The method name of a group's records."""
    return str(group[0]["spec"]["method"])
