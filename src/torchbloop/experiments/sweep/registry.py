"""Registry of experiments: what an experiment is, what one run of it is, and where they live.

An experiment module (see :mod:`torchbloop.experiments.tasks`) builds one :class:`Experiment`
and calls :func:`register`. The runner expands a sweep into :class:`RunSpec` values and hands
each to ``experiment.run``, which returns one JSON-able record (schema in
:mod:`torchbloop.experiments.results`).

Example:
    >>> spec = RunSpec("quadratic", "bloop", lam=0.01, rho=0.01, seed=0, budget="smoke")
    >>> spec.run_id
    'bloop_lam1e-02_rho1e-02_seed0'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ... import methods as method_table

BUDGETS: tuple[str, ...] = ("smoke", "default", "paper")
"""``smoke``: seconds (CI); ``default``: the committed results; ``paper``: closer to the paper."""

DEMO_BUDGET = "demo"
"""An extra budget an experiment may define for ``torchbloop demo`` only (not a CLI choice)."""

METHODS: tuple[str, ...] = tuple(n for n, info in method_table.METHODS.items() if info.in_paper)
"""The default methods of an experiment: those of the table :data:`torchbloop.methods.METHODS`
that the paper runs (``in_paper``); any other table entry runs when named with ``--methods``.
Validation reads the table itself."""

Record = dict[str, Any]
PlotFn = Callable[[Sequence[Record], Path], list[Path]]
SummaryFn = Callable[[Sequence[Record]], list[str]]


def format_float(x: float) -> str:
    """Short, filename-safe, sortable-enough text for a float: ``1e-02``, ``4.64e-03``, ``0``.

    Example:
        >>> [format_float(v) for v in (0.0, 0.01, 0.004641588, 1000.0)]
        ['0', '1e-02', '4.64e-03', '1e+03']
    """
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


Lam = float | tuple[float, ...]
"""One aux weight, or one per aux loss (highest priority first)."""


def as_lam(value: Any) -> Lam:
    """``value`` as a :data:`Lam`: a float, or a tuple of two or more floats.

    A one-element sequence is the float it holds (one aux loss either way), so a run's
    identity does not depend on how its lam was written.

    Raises:
        TypeError: not a number or a sequence of numbers.
        ValueError: an empty sequence.

    Example:
        >>> as_lam(1), as_lam([0.5]), as_lam([0.1, 0.01])
        (1.0, 0.5, (0.1, 0.01))
    """
    if isinstance(value, bool):
        raise TypeError(f"Invalid lam={value!r}: must be a number or a sequence of numbers")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("Invalid lam=(): give at least one value")
        levels = tuple(as_lam(v) for v in value)
        if any(isinstance(v, tuple) for v in levels):
            raise TypeError(f"Invalid lam={value!r}: nested sequences")
        floats = tuple(float(v) for v in levels)  # type: ignore[arg-type]
        return floats[0] if len(floats) == 1 else floats
    raise TypeError(f"Invalid lam={value!r}: must be a number or a sequence of numbers")


def lam_levels(lam: Any) -> tuple[float, ...]:
    """The aux weights of ``lam``, one per aux loss (also for a record's JSON list).

    Example:
        >>> lam_levels(0.1), lam_levels([0.1, 0.01])
        ((0.1,), (0.1, 0.01))
    """
    value = as_lam(lam)
    return value if isinstance(value, tuple) else (value,)


def format_lam(lam: Any) -> str:
    """:func:`format_float` of each aux weight, joined by commas (``1e-01,1e-02``).

    Example:
        >>> format_lam(0.01), format_lam((0.1, 0.0))
        ('1e-02', '1e-01,0')
    """
    return ",".join(format_float(x) for x in lam_levels(lam))


_VARIANT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: a method at one (lam, rho, seed) under one budget.

    Args:
        experiment: registered experiment name.
        method: a name in the method table :data:`torchbloop.methods.METHODS`.
        lam: weight of the aux loss (the paper's lambda), ``>= 0``; or one weight per aux
            loss, highest priority first (a one-element sequence is stored as its float).
        rho: weight of the newest gradient in Bloop's EMA (the paper's rho), in (0, 1];
            recorded for every method, used by the methods whose table entry lists ``rho``.
        seed: random seed of the run (data, initialisation, batches).
        budget: one of :data:`BUDGETS`.
        variant: an experiment-specific variant of the method (e.g. ``"summed"``: its aux
            losses summed into one); ``""`` for the plain method. Lowercase letters, digits
            and ``-``.

    Raises:
        TypeError, ValueError: ``lam`` or ``variant`` malformed.

    Example:
        >>> RunSpec("h", "bloop", lam=[0.1, 0.01], rho=0.01, seed=0, budget="smoke").run_id
        'bloop_lam1e-01,1e-02_rho1e-02_seed0'
        >>> RunSpec("h", "bloop", 0.1, 0.01, 0, "smoke", variant="summed").run_id
        'bloop_lam1e-01_rho1e-02_seed0_summed'
    """

    experiment: str
    method: str
    lam: Lam
    rho: float
    seed: int
    budget: str
    variant: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lam", as_lam(self.lam))
        if not isinstance(self.variant, str) or not set(self.variant) <= _VARIANT_CHARS:
            raise ValueError(
                f"Invalid variant={self.variant!r}: use lowercase letters, digits and '-'"
            )

    @property
    def scalar_lam(self) -> float:
        """``lam`` of a run with one aux loss.

        Raises:
            ValueError: the run has several aux weights.
        """
        if isinstance(self.lam, tuple):
            raise ValueError(
                f"Invalid lam={self.lam} for {self.experiment!r}: it takes one aux weight"
            )
        return self.lam

    @property
    def levels(self) -> tuple[float, ...]:
        """The aux weights, one per aux loss (see :func:`lam_levels`)."""
        return lam_levels(self.lam)

    @property
    def run_id(self) -> str:
        """Filename-safe identifier, unique within an experiment and budget-independent."""
        run_id = (
            f"{self.method}_lam{format_lam(self.lam)}_rho{format_float(self.rho)}_seed{self.seed}"
        )
        return f"{run_id}_{self.variant}" if self.variant else run_id


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """A registered experiment.

    Args:
        name: CLI name (``torchbloop run NAME``); lowercase, underscores.
        title: one-line human title.
        paper_ref: where it is in the paper, e.g. ``"Fig. 2"``, ``"Sec. 5.2"``.
        kind: ``"sweep"`` (Pareto fronts of end points over lam) or ``"analysis"``
            (curves; reported with ``plot`` or the generic curve plot).
        run: one run -> record (see :mod:`torchbloop.experiments.results`). Called in a fresh
            worker process when ``--jobs > 1``, so it must be a module-level function.
        methods: default methods of a sweep.
        lams: lam grid per budget (keys among :data:`BUDGETS`; a missing budget falls back to
            ``"default"``).
        rho: Bloop's EMA weight when the sweep does not give one.
        rhos: default rho grid (e.g. for the EMA ablation); empty means ``(rho,)``.
        seeds: default seeds.
        datasets: names of the datasets it needs (``()`` for synthetic ones).
        plot: optional custom figure(s) for the report: ``(records, out_dir) -> [png paths]``.
        description: a paragraph for the report: setting and the paper's claim.
        demo_budget: the budget ``torchbloop demo`` uses (when the experiment is part of it).
        objectives: the losses of a sweep, in priority order; a record's ``final`` holds
            ``train_<o>`` and ``eval_<o>`` for each (default: ``("main", "aux")``).
        variants: extra variants per method name (see :attr:`RunSpec.variant`), run beside
            the plain method: e.g. ``{"bloop": ("summed",)}``.
        max_levels: how many aux weights a run's lam may hold (the aux losses of the task).
        summary: optional Markdown lines for the report, from the records (e.g. a table the
            experiment's question needs).
    """

    name: str
    title: str
    paper_ref: str
    kind: Literal["sweep", "analysis"]
    run: Callable[[RunSpec], Record]
    methods: tuple[str, ...] = METHODS
    lams: Mapping[str, Sequence[Lam | Sequence[float]]] = field(default_factory=dict)
    rho: float = 0.01
    rhos: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    datasets: tuple[str, ...] = ()
    plot: PlotFn | None = None
    description: str = ""
    demo_budget: str = "smoke"
    objectives: tuple[str, ...] = ("main", "aux")
    variants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_levels: int = 1
    summary: SummaryFn | None = None

    def lams_for(self, budget: str) -> tuple[Lam, ...]:
        """The lam grid of ``budget`` (falls back to ``"default"``, then to ``(0.0,)``)."""
        grid: Sequence[Any] = self.lams.get(budget, self.lams.get("default", (0.0,)))
        return tuple(as_lam(x) for x in grid)

    def final_keys(self) -> tuple[str, ...]:
        """The keys every record's ``final`` must hold: ``train_<o>``, ``eval_<o>`` per objective."""
        return tuple(f"{split}_{o}" for split in ("train", "eval") for o in self.objectives)

    def variants_of(self, method: str) -> tuple[str, ...]:
        """``("", *variants[method])``: the plain method first, then its extra variants."""
        return ("", *self.variants.get(method, ()))

    def rhos_default(self) -> tuple[float, ...]:
        """The rho grid used when the sweep does not give one."""
        return self.rhos or (self.rho,)


_REGISTRY: dict[str, Experiment] = {}


def _valid_lam(lam: Lam, max_levels: int) -> bool:
    levels = lam_levels(lam)
    return len(levels) <= max_levels and all(math.isfinite(x) and x >= 0 for x in levels)


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (replacing one of the same name) and return it.

    Raises:
        ValueError: if a method name or budget key is unknown, the kind is invalid, a lam in
            a grid is negative, not finite or has more weights than ``max_levels``, or the
            objectives or variants are malformed.
    """
    if experiment.kind not in ("sweep", "analysis"):
        raise ValueError(
            f"Invalid kind={experiment.kind!r} for {experiment.name!r}: must be 'sweep' or 'analysis'"
        )
    table = method_table.METHODS
    bad_methods = [m for m in (*experiment.methods, *experiment.variants) if m not in table]
    if bad_methods:
        raise ValueError(
            f"Invalid methods={bad_methods} for {experiment.name!r}: valid: {', '.join(table)}"
        )
    if len(experiment.objectives) < 2 or len(set(experiment.objectives)) != len(
        experiment.objectives
    ):
        raise ValueError(
            f"Invalid objectives={experiment.objectives} for {experiment.name!r}: "
            "need two or more distinct names (main loss first)"
        )
    for budget in experiment.lams:
        grid = experiment.lams_for(budget)
        bad = [lam for lam in grid if not _valid_lam(lam, experiment.max_levels)]
        if bad:
            raise ValueError(
                f"Invalid lams[{budget!r}]={bad} for {experiment.name!r}: each needs 1 to "
                f"{experiment.max_levels} finite weights >= 0"
            )
    for variant in (v for vs in experiment.variants.values() for v in vs):
        if not variant or not set(variant) <= _VARIANT_CHARS:
            raise ValueError(
                f"Invalid variant={variant!r} for {experiment.name!r}: use lowercase letters, "
                "digits and '-'"
            )
    valid = (*BUDGETS, DEMO_BUDGET)
    bad_budgets = [b for b in (*experiment.lams, experiment.demo_budget) if b not in valid]
    if bad_budgets:
        raise ValueError(
            f"Invalid lams budgets={bad_budgets} for {experiment.name!r}: valid: {valid}"
        )
    if experiment.demo_budget == DEMO_BUDGET and DEMO_BUDGET not in experiment.lams:
        raise ValueError(
            f"Invalid demo_budget={DEMO_BUDGET!r} for {experiment.name!r}: give lams[{DEMO_BUDGET!r}]"
        )
    _REGISTRY[experiment.name] = experiment
    return experiment


def _load_tasks() -> None:
    from .. import tasks  # noqa: F401  (importing registers the built-in experiments)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    _load_tasks()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown experiment {name!r}: valid names are {', '.join(names())}"
        ) from None


def names() -> list[str]:
    """Names of all registered experiments, in registration order."""
    _load_tasks()
    return list(_REGISTRY)
