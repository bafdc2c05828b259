"""Stateful surgeons: hyperparameters, state, ``backward``/``combine``, ``state_dict``."""

from ._base import Surgeon
from .bloop import EMA_KEY, Bloop, BloopDiagnostics
from .dynamic_barrier import DynamicBarrier
from .mixed import Mixed
from .pcgrad import PCGrad

__all__ = ["EMA_KEY", "Bloop", "BloopDiagnostics", "DynamicBarrier", "Mixed", "PCGrad", "Surgeon"]
