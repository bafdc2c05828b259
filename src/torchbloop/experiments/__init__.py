"""Experiment suite: datasets, tasks and runners for comparing Bloop with its baselines.

Layout:

* :mod:`.data`: the datasets (fetch, cache, load) and their batch pipelines
  (:mod:`.data.text_batches`, :mod:`.data.vision_batches`).
* :mod:`.models`: the networks the tasks train.
* :mod:`.tasks`: one module per experiment; importing it registers the experiment.
* :mod:`.sweep`: the registry, the runner, the records on disk, the training loop, and the
  surgeon of a run (from the method table :mod:`torchbloop.methods`).
* :mod:`.analysis`: Pareto tools, figures, reports (they only read records).
* :mod:`.cli`: the ``torchbloop`` command, ``list | run | report | demo``.

Adding an experiment: write ``tasks/<name>.py`` that calls :func:`register` with an
:class:`Experiment`, and import it in ``tasks/__init__.py``.
"""

from .analysis.pareto import dominated_count, hypervolume_2d, nondominated, reference_point
from .sweep.methods import make_surgeon
from .sweep.registry import BUDGETS, METHODS, Experiment, RunSpec, get, names, register
from .sweep.results import is_done, read_records, run_path, write_record
from .sweep.runner import run_sweep
from .sweep.training import cosine_with_warmup, set_seed, train

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
