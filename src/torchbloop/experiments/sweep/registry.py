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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ... import methods as method_table

BUDGETS: tuple[str, ...] = ("smoke", "default", "paper")
"""``smoke``: seconds (CI); ``default``: the committed results; ``paper``: closer to the paper."""

DEMO_BUDGET = "demo"
"""An extra budget an experiment may define for ``torchbloop demo`` only (not a CLI choice)."""

METHODS: tuple[str, ...] = tuple(method_table.METHODS)
"""Names of the methods in the table :data:`torchbloop.methods.METHODS` when it was imported
(the default methods of an experiment); validation reads the table itself."""

Record = dict[str, Any]
PlotFn = Callable[[Sequence[Record], Path], list[Path]]


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


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: a method at one (lam, rho, seed) under one budget.

    Args:
        experiment: registered experiment name.
        method: one of :data:`METHODS`.
        lam: weight of the aux loss (the paper's lambda), ``>= 0``.
        rho: weight of the newest gradient in Bloop's EMA (the paper's rho), in (0, 1];
            recorded for every method, used by Bloop only.
        seed: random seed of the run (data, initialisation, batches).
        budget: one of :data:`BUDGETS`.
    """

    experiment: str
    method: str
    lam: float
    rho: float
    seed: int
    budget: str

    @property
    def run_id(self) -> str:
        """Filename-safe identifier, unique within an experiment and budget-independent."""
        return (
            f"{self.method}_lam{format_float(self.lam)}_rho{format_float(self.rho)}_seed{self.seed}"
        )


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
    """

    name: str
    title: str
    paper_ref: str
    kind: Literal["sweep", "analysis"]
    run: Callable[[RunSpec], Record]
    methods: tuple[str, ...] = METHODS
    lams: Mapping[str, Sequence[float]] = field(default_factory=dict)
    rho: float = 0.01
    rhos: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    datasets: tuple[str, ...] = ()
    plot: PlotFn | None = None
    description: str = ""
    demo_budget: str = "smoke"

    def lams_for(self, budget: str) -> tuple[float, ...]:
        """The lam grid of ``budget`` (falls back to ``"default"``, then to ``(0.0,)``)."""
        grid = self.lams.get(budget, self.lams.get("default", (0.0,)))
        return tuple(float(x) for x in grid)

    def rhos_default(self) -> tuple[float, ...]:
        """The rho grid used when the sweep does not give one."""
        return self.rhos or (self.rho,)


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (replacing one of the same name) and return it.

    Raises:
        ValueError: if a method name or budget key is unknown, or the kind is invalid.
    """
    if experiment.kind not in ("sweep", "analysis"):
        raise ValueError(
            f"Invalid kind={experiment.kind!r} for {experiment.name!r}: must be 'sweep' or 'analysis'"
        )
    bad_methods = [m for m in experiment.methods if m not in METHODS]
    if bad_methods:
        raise ValueError(f"Invalid methods={bad_methods} for {experiment.name!r}: valid: {METHODS}")
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
