"""The method table: every gradient-surgery method the library ships, in one place.

Each :class:`MethodInfo` says what a method is called (on the command line, in records and in
legends), how it is drawn, how to build its surgeon, which hyperparameters a sweep may set, and
how many auxiliary losses it takes. The surgeon registry, the experiments, the plots and the
contract tests all read :data:`METHODS`; adding a method is its formula file plus one entry here.

Example:
    >>> list(METHODS)
    ['bloop', 'mixed', 'pcgrad', 'dynamic_barrier']
    >>> info = get_method("bloop")
    >>> info.label, info.hyperparameters
    ('Bloop', ('lam', 'rho'))
    >>> import torch
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> type(info.factory([w], lam=0.1, rho=0.01)).__name__
    'Bloop'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from .surgeons.bloop import Bloop
from .surgeons.dynamic_barrier import DynamicBarrier
from .surgeons.mixed import Mixed
from .surgeons.pcgrad import PCGrad

if TYPE_CHECKING:
    from .surgeons._base import Surgeon

__all__ = ["METHODS", "MethodInfo", "get_method"]


@dataclass(frozen=True)
class MethodInfo:
    """One gradient-surgery method: its names, its colour, its factory and what it accepts.

    Args:
        name: CLI and record name, e.g. ``"bloop"`` (lowercase, underscores).
        label: plot and legend label, e.g. ``"Bloop"``.
        colour: a matplotlib colour, e.g. ``"tab:red"``.
        factory: ``factory(params, **hyperparameters) -> surgeon`` (usually the class).
        hyperparameters: the keyword arguments a sweep may set, e.g. ``("lam", "rho")``.
        max_aux: how many auxiliary losses it takes (``None``: any number K).
        description: one line: when to use it (README and docs tables).
    """

    name: str
    label: str
    colour: str
    factory: Callable[..., Surgeon]
    hyperparameters: tuple[str, ...]
    max_aux: int | None = 1
    description: str = ""


def _table(*infos: MethodInfo) -> Mapping[str, MethodInfo]:
    return MappingProxyType({info.name: info for info in infos})


METHODS: Mapping[str, MethodInfo] = _table(
    MethodInfo(
        name="bloop",
        label="Bloop",
        colour="tab:red",
        factory=Bloop,
        hyperparameters=("lam", "rho"),
        max_aux=1,
        description=(
            "the main loss first: the aux gradient without its component along an EMA of "
            "main gradients (Hsieh et al., 2024)"
        ),
    ),
    MethodInfo(
        name="mixed",
        label="Mixed",
        colour="tab:blue",
        factory=Mixed,
        hyperparameters=("lam",),
        max_aux=1,
        description="the plain weighted sum L_main + lam * L_aux (the usual baseline)",
    ),
    MethodInfo(
        name="pcgrad",
        label="PCGrad",
        colour="tab:green",
        factory=PCGrad,
        hyperparameters=("lam",),
        max_aux=1,
        description="both gradients projected off each other when they conflict (Yu et al., 2020)",
    ),
    MethodInfo(
        name="dynamic_barrier",
        label="Dynamic Barrier",
        colour="tab:purple",
        factory=DynamicBarrier,
        hyperparameters=("lam",),
        max_aux=1,
        description=(
            "the main gradient scaled down when the aux one opposes it (Gong and Liu, 2021)"
        ),
    ),
)
"""The method table, in display order (Bloop first)."""


def get_method(name: str) -> MethodInfo:
    """The table entry of ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid names.

    Example:
        >>> get_method("mixed").label
        'Mixed'
        >>> get_method("adam")
        Traceback (most recent call last):
        ...
        ValueError: Unknown method 'adam': valid methods are bloop, mixed, pcgrad, dynamic_barrier
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        valid = ", ".join(METHODS)
        raise ValueError(f"Unknown method {name!r}: valid methods are {valid}") from None
