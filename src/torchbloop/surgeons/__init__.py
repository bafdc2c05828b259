"""Stateful surgeons: hyperparameters, state, ``backward``/``combine``, ``state_dict``."""

from ._base import Surgeon, surgeon_for
from ._state import StateSpec
from .agem import AGEM
from .bloop import EMA_KEY, Bloop, BloopDiagnostics, ema_key
from .cosine_gating import CosineGating
from .dynamic_barrier import DynamicBarrier
from .gradvac import GradVac
from .metabalance import MetaBalance
from .mgda import MGDA
from .mixed import Mixed
from .original_dynamic_barrier import OriginalDynamicBarrier
from .pcgrad import PCGrad

__all__ = [
    "AGEM",
    "EMA_KEY",
    "MGDA",
    "Bloop",
    "BloopDiagnostics",
    "CosineGating",
    "DynamicBarrier",
    "GradVac",
    "MetaBalance",
    "Mixed",
    "OriginalDynamicBarrier",
    "PCGrad",
    "StateSpec",
    "Surgeon",
    "ema_key",
    "surgeon_for",
]
