"""Experiment suite: datasets, tasks and runners for comparing Bloop with its baselines.

Command line: ``torchbloop list | run | report | demo`` (see :mod:`.cli`). Adding an
experiment: write ``tasks/<name>.py`` that calls :func:`register` with an :class:`Experiment`,
and import it in ``tasks/__init__.py``.
"""

from .methods import make_surgeon
from .pareto import dominated_count, hypervolume_2d, nondominated, reference_point
from .registry import BUDGETS, METHODS, Experiment, RunSpec, get, names, register
from .results import is_done, read_records, run_path, write_record
from .runner import run_sweep
from .training import cosine_with_warmup, set_seed, train

__all__ = [
    "BUDGETS",
    "METHODS",
    "Experiment",
    "RunSpec",
    "cosine_with_warmup",
    "dominated_count",
    "get",
    "hypervolume_2d",
    "is_done",
    "make_surgeon",
    "names",
    "nondominated",
    "read_records",
    "reference_point",
    "register",
    "run_path",
    "run_sweep",
    "set_seed",
    "train",
    "write_record",
]
