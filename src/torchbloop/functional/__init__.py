"""The functional core: update directions on lists of tensors.

Each method has a fast path (multi-tensor kernels, no host synchronisation, no flattening
copy) and a ``..._reference`` twin (one float64 vector, the formula as written) that the tests
hold it equal to. On CPU, :func:`bloop_update_` runs a fused C kernel compiled on first use
(:func:`cpu_kernel_status`, :func:`use_cpu_kernel`). The stateful surgeons in :mod:`torchbloop.surgeons` call these functions.
"""

from ._combination import add_scaled_, axpby
from ._fused import bloop_update_, bloop_update_composed_, bloop_update_reference
from ._native import available as cpu_kernel_available
from ._native import status as cpu_kernel_status
from ._native import use_cpu_kernel
from ._reductions import accumulation_dtype, global_dots, global_dots_reference
from ._types import Reducer, TensorList
from .bloop import BloopDirection, bloop_direction, bloop_direction_reference
from .dynamic_barrier import dynamic_barrier_direction, dynamic_barrier_direction_reference
from .ema import ema_update_, ema_update_reference
from .mixed import mixed_direction, mixed_direction_reference
from .pcgrad import pcgrad_direction, pcgrad_direction_reference
from .projection import projection_coefficient

__all__ = [
    "BloopDirection",
    "Reducer",
    "TensorList",
    "accumulation_dtype",
    "add_scaled_",
    "axpby",
    "bloop_direction",
    "bloop_direction_reference",
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
    "pcgrad_direction",
    "pcgrad_direction_reference",
    "projection_coefficient",
    "use_cpu_kernel",
]
