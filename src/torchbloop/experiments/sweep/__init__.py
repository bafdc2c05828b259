"""The sweep machinery: what an experiment and a run are, running sweeps, records on disk.

* :mod:`.registry`: :class:`Experiment`, :class:`RunSpec`, the experiment registry, budgets.
* :mod:`.runner`: expand a sweep into runs, skip finished ones, run the rest.
* :mod:`.results`: one JSON record per run (schema, validation, reading, writing).
* :mod:`.training`: the generic training loop every sweep task uses.
* :mod:`.methods`: build a run's surgeon from the method table (:mod:`torchbloop.methods`).
"""

from .methods import make_surgeon
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
    "get",
    "is_done",
    "make_surgeon",
    "names",
    "read_records",
    "register",
    "run_path",
    "run_sweep",
    "set_seed",
    "train",
    "write_record",
]
