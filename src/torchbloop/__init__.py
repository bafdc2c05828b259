"""torchbloop: gradient surgery for PyTorch, with Bloop (Hsieh et al., ICML 2024) at its heart.

Layers, from the bottom up: :mod:`torchbloop.functional` (directions on lists of tensors, each
with a slow reference), :mod:`torchbloop.surgeons` (``Bloop``, ``Mixed``, ``PCGrad``,
``DynamicBarrier``: state, ``backward``/``combine``, ``state_dict``), then your own optimizer.
:mod:`torchbloop.methods` is the one table of methods (name, label, colour, factory, how many
auxiliary losses) that the surgeons' registry, the experiments and the tests read.
"""

from . import functional, methods
from ._validation import NonFiniteGradientError
from .methods import METHODS, MethodInfo, get_method
from .surgeons import (
    AGEM,
    MGDA,
    Bloop,
    BloopDiagnostics,
    CosineGating,
    DynamicBarrier,
    GradVac,
    MetaBalance,
    Mixed,
    OriginalDynamicBarrier,
    PCGrad,
    Surgeon,
    surgeon_for,
)

__version__ = "0.1.0"

__all__ = [
    "AGEM",
    "METHODS",
    "MGDA",
    "Bloop",
    "BloopDiagnostics",
    "CosineGating",
    "DynamicBarrier",
    "GradVac",
    "MetaBalance",
    "MethodInfo",
    "Mixed",
    "NonFiniteGradientError",
    "OriginalDynamicBarrier",
    "PCGrad",
    "Surgeon",
    "__version__",
    "functional",
    "get_method",
    "methods",
    "surgeon_for",
]
