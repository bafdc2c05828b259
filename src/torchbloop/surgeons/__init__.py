"""Stateful surgeons: hyperparameters, state, ``backward``/``combine``, ``state_dict``."""

from ._base import Surgeon, surgeon_for
from ._state import StateSpec
from .bloop import EMA_KEY, Bloop, BloopDiagnostics, ema_key
from .dynamic_barrier import DynamicBarrier
from .mixed import Mixed
from .pcgrad import PCGrad

__all__ = [
    "EMA_KEY",
    "Bloop",
    "BloopDiagnostics",
    "DynamicBarrier",
    "Mixed",
    "PCGrad",
    "StateSpec",
    "Surgeon",
    "ema_key",
    "surgeon_for",
]
