"""Type aliases shared by the functional core."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

TensorList = Sequence[Tensor]
"""A list of tensors aligned with a list of parameters (one entry per parameter)."""

Reducer = Callable[[Tensor], Tensor]
"""Turns a vector of *local* partial inner products into global ones.

The functional core computes every inner product a method needs in one call of
:func:`torchbloop.functional.global_dots`, which returns them stacked in a 1-D tensor.
When the tensors are shards of larger ones (FSDP, tensor parallelism), a reducer sums that
vector over the process group (one collective, whatever the number of inner products).
``None`` means the tensors are whole and nothing needs reducing.
"""
