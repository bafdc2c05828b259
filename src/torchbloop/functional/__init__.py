"""The functional core: every method is inner products, a few coefficients, one pass.

:mod:`.contract` holds the contract (:class:`Formula`, :class:`SurgeryStep`); each method has a
formula file (:mod:`.bloop`, :mod:`.mixed`, :mod:`.pcgrad`, :mod:`.dynamic_barrier`) with its
``..._reference`` twin (one float64 vector, the formula as written) that the tests hold the fast
paths equal to. On plain CPU float32/float64 lists both passes run in a fused C kernel compiled
on first use (:func:`cpu_kernel_status`, :func:`use_cpu_kernel`); elsewhere on torch ops. The
first API's functions (:func:`bloop_direction`, :func:`bloop_update_`, ...) are thin wrappers.
The stateful surgeons in :mod:`torchbloop.surgeons` build on these.
"""

from ._fused import (
    BloopDirection,
    bloop_direction,
    bloop_direction_reference,
    bloop_update_,
    bloop_update_composed_,
    bloop_update_reference,
)
from ._native import available as cpu_kernel_available
from ._native import status as cpu_kernel_status
from ._native import use_cpu_kernel
from ._reductions import accumulation_dtype, global_dots, global_dots_reference
from ._types import Reducer, TensorList
from .bloop import RANK_RTOL, BloopFormula, BloopReference, EmaOrder, bloop_reference
from .contract import Coefficients, Formula, GramBlocks, Hyper, StepResult, SurgeryStep
from .dynamic_barrier import (
    DynamicBarrierFormula,
    dynamic_barrier_direction,
    dynamic_barrier_direction_reference,
)
from .ema import ema_update_, ema_update_reference
from .mixed import MixedFormula, mixed_direction, mixed_direction_reference, mixed_reference
from .pcgrad import PCGradFormula, pcgrad_direction, pcgrad_direction_reference
from .projection import projection_coefficient

__all__ = [
    "RANK_RTOL",
    "BloopDirection",
    "BloopFormula",
    "BloopReference",
    "Coefficients",
    "DynamicBarrierFormula",
    "EmaOrder",
    "Formula",
    "GramBlocks",
    "Hyper",
    "MixedFormula",
    "PCGradFormula",
    "Reducer",
    "StepResult",
    "SurgeryStep",
    "TensorList",
    "accumulation_dtype",
    "bloop_direction",
    "bloop_direction_reference",
    "bloop_reference",
    "bloop_update_",
    "bloop_update_composed_",
    "bloop_update_reference",
    "cpu_kernel_available",
    "cpu_kernel_status",
    "dynamic_barrier_direction",
    "dynamic_barrier_direction_reference",
    "ema_update_",
    "ema_update_reference",
    "global_dots",
    "global_dots_reference",
    "mixed_direction",
    "mixed_direction_reference",
    "mixed_reference",
    "pcgrad_direction",
    "pcgrad_direction_reference",
    "projection_coefficient",
    "use_cpu_kernel",
]
