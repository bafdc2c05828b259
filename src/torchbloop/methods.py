"""The method table: every gradient-surgery method the library ships, in one place.

Each :class:`MethodInfo` says what a method is called (on the command line, in records and in
legends), how it is drawn, how to build its surgeon, which hyperparameters a sweep may set, and
how many auxiliary losses it takes. The surgeon registry, the experiments, the plots and the
contract tests all read :data:`METHODS`; adding a method is its formula file plus one entry here.

Example:
    >>> list(METHODS)  # doctest: +NORMALIZE_WHITESPACE
    ['bloop', 'mixed', 'pcgrad', 'dynamic_barrier', 'agem', 'mgda', 'cosine_gating', 'gradvac',
     'metabalance', 'original_dynamic_barrier']
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

from .functional.mgda import MAX_OBJECTIVES
from .surgeons.agem import AGEM
from .surgeons.bloop import Bloop
from .surgeons.cosine_gating import CosineGating
from .surgeons.dynamic_barrier import DynamicBarrier
from .surgeons.gradvac import GradVac
from .surgeons.metabalance import MetaBalance
from .surgeons.mgda import MGDA
from .surgeons.mixed import Mixed
from .surgeons.original_dynamic_barrier import OriginalDynamicBarrier
from .surgeons.pcgrad import PCGrad

if TYPE_CHECKING:
    from .surgeons._base import Surgeon

__all__ = ["FIXED_LAM", "METHODS", "MethodInfo", "get_method"]

FIXED_LAM = 1.0
"""The lam recorded for a run of a method without ``lam`` (MetaBalance, the original Dynamic
Barrier): their surgeons weight the aux term by 1 before their own rule (see
:attr:`MethodInfo.takes_lam`)."""


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
        in_paper: the Bloop paper's experiments run it (Bloop and its three baselines); the
            experiments sweep these by default, the others when named with ``--methods``.
    """

    name: str
    label: str
    colour: str
    factory: Callable[..., Surgeon]
    hyperparameters: tuple[str, ...]
    max_aux: int | None = 1
    description: str = ""
    in_paper: bool = False

    @property
    def takes_lam(self) -> bool:
        """Whether a sweep's lam axis applies: ``"lam"`` is among the hyperparameters.

        A method without it (MetaBalance, the original Dynamic Barrier) sets the aux term's
        weight by its own rule; a sweep runs it ONCE per seed at its defaults, whatever the lam
        grid, and records ``lam =`` :data:`FIXED_LAM`, so its end points are single points
        beside the other methods' fronts.

        Example:
            >>> METHODS["mixed"].takes_lam, METHODS["metabalance"].takes_lam
            (True, False)
        """
        return "lam" in self.hyperparameters


def _table(*infos: MethodInfo) -> Mapping[str, MethodInfo]:
    return MappingProxyType({info.name: info for info in infos})


METHODS: Mapping[str, MethodInfo] = _table(
    MethodInfo(
        name="bloop",
        label="Bloop",
        colour="tab:red",
        factory=Bloop,
        hyperparameters=("lam", "rho"),
        max_aux=None,
        description=(
            "the main loss first: the aux gradient without its component along an EMA of "
            "main gradients (Hsieh et al., 2024)"
        ),
        in_paper=True,
    ),
    MethodInfo(
        name="mixed",
        label="Mixed",
        colour="tab:blue",
        factory=Mixed,
        hyperparameters=("lam",),
        max_aux=None,
        description="the plain weighted sum L_main + lam * L_aux (the usual baseline)",
        in_paper=True,
    ),
    MethodInfo(
        name="pcgrad",
        label="PCGrad",
        colour="tab:green",
        factory=PCGrad,
        hyperparameters=("lam",),
        max_aux=1,
        description="both gradients projected off each other when they conflict (Yu et al., 2020)",
        in_paper=True,
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
        in_paper=True,
    ),
    MethodInfo(
        name="agem",
        label="A-GEM",
        colour="tab:orange",
        factory=AGEM,
        hyperparameters=("lam",),
        max_aux=1,
        description=(
            "the aux gradient without the part that would slow the main loss down "
            "(Chaudhry et al., 2019; main protected)"
        ),
    ),
    MethodInfo(
        name="mgda",
        label="MGDA",
        colour="tab:cyan",
        factory=MGDA,
        hyperparameters=("lam",),
        max_aux=MAX_OBJECTIVES - 1,
        description=(
            "the min-norm point of the gradients: no loss increases, no priority "
            "(Desideri, 2012; Sener and Koltun, 2018)"
        ),
    ),
    MethodInfo(
        name="cosine_gating",
        label="Cosine gating",
        colour="tab:pink",
        factory=CosineGating,
        hyperparameters=("lam",),
        max_aux=1,
        description="the aux gradient used only when it agrees with the main one (Du et al., 2018)",
    ),
    MethodInfo(
        name="gradvac",
        label="GradVac",
        colour="tab:brown",
        factory=GradVac,
        hyperparameters=("lam",),
        max_aux=1,
        description=(
            "the aux gradient turned toward the main one up to a learnt target cosine "
            "(Wang et al., 2021)"
        ),
    ),
    MethodInfo(
        name="metabalance",
        label="MetaBalance",
        colour="tab:olive",
        factory=MetaBalance,
        hyperparameters=(),
        max_aux=1,
        description=(
            "the aux gradient rescaled, tensor by tensor, toward the main one's magnitude "
            "(He et al., 2022)"
        ),
    ),
    MethodInfo(
        name="original_dynamic_barrier",
        label="Dynamic Barrier (original)",
        colour="tab:gray",
        factory=OriginalDynamicBarrier,
        hyperparameters=(),
        max_aux=1,
        description=(
            "descend on the aux loss while a barrier keeps the main loss decreasing "
            "(Gong, Liu and Liu, 2021; needs a lower bound of the main loss)"
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
        ValueError: Unknown method 'adam': valid methods are bloop, mixed, pcgrad, dynamic_barrier, agem, mgda, cosine_gating, gradvac, metabalance, original_dynamic_barrier
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        valid = ", ".join(METHODS)
        raise ValueError(f"Unknown method {name!r}: valid methods are {valid}") from None
