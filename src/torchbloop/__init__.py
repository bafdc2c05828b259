"""torchbloop: gradient surgery for PyTorch, with Bloop (Hsieh et al., ICML 2024) at its heart.

Layers, from the bottom up: :mod:`torchbloop.functional` (directions on lists of tensors, each
with a slow reference), :mod:`torchbloop.surgeons` (``Bloop``, ``Mixed``, ``PCGrad``,
``DynamicBarrier``: state, ``backward``/``combine``, ``state_dict``), then your own optimizer.
"""

from . import functional
from ._validation import NonFiniteGradientError
from .surgeons import Bloop, BloopDiagnostics, DynamicBarrier, Mixed, PCGrad, Surgeon

__version__ = "0.1.0"

__all__ = [
    "Bloop",
    "BloopDiagnostics",
    "DynamicBarrier",
    "Mixed",
    "NonFiniteGradientError",
    "PCGrad",
    "Surgeon",
    "__version__",
    "functional",
]
