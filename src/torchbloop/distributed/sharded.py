"""Sharded parameters (FSDP2 ``fully_shard``, DTensor): local views and one reduction.

Under FSDP2 every parameter, gradient and EMA is a ``DTensor`` sharded over a device mesh.
Everything a surgeon computes is elementwise except a few global inner products, so it works on
the local shards (plain tensors, no communication) and sums the stacked local inner products
over the mesh with one ``all_reduce`` (the functional core's ``reduce`` hook). The EMA stays a
``DTensor`` sharded like its parameter, so a ``torch.distributed.checkpoint`` save writes each
rank's shard.

Example:
    >>> import torch
    >>> from torchbloop.distributed import is_sharded
    >>> is_sharded([torch.zeros(2)])
    False
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "ShardedReducer",
    "as_sharded_like",
    "is_sharded",
    "local",
    "sharded_reducer",
]


def _is_dtensor(t: object) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "device_mesh") and hasattr(t, "placements")


def is_sharded(params: Sequence[Tensor]) -> bool:
    """True when the parameters are DTensors (FSDP2 / tensor parallelism).

    Raises:
        ValueError: some parameters are DTensors and some are not.
    """
    flags = [_is_dtensor(p) for p in params]
    if any(flags) and not all(flags):
        raise ValueError(
            "Invalid params: a mix of DTensor and ordinary parameters; give a surgeon either only "
            "sharded parameters (all under fully_shard) or only ordinary ones"
        )
    return bool(flags) and all(flags)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (a view sharing its storage), the tensor itself otherwise."""
    return t.to_local() if _is_dtensor(t) else t  # type: ignore[attr-defined,no-any-return]


class ShardedReducer:
    """Sums local partial results over the mesh dimensions along which the tensors are sharded.

    A callable :data:`torchbloop.functional.Reducer`: one ``all_reduce`` per sharded mesh
    dimension (one for FSDP2's 1-D mesh), whatever the number of inner products stacked in the
    vector. ``calls`` counts the collectives issued (for tests and benchmarks).
    """

    def __init__(self, groups: list[dist.ProcessGroup]) -> None:
        self.groups = groups
        self.calls = 0

    def __call__(self, values: Tensor) -> Tensor:
        for group in self.groups:
            dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
            self.calls += 1
        return values

    def all_true(self, flag: Tensor) -> Tensor:
        """Whether each entry of ``flag`` (bool) holds on every rank (one small ``all_reduce``)."""
        value = flag.to(torch.float32).reshape(-1)
        for group in self.groups:
            dist.all_reduce(value, op=dist.ReduceOp.MIN, group=group)
            self.calls += 1
        return (value > 0).reshape(flag.shape)


def sharded_reducer(params: Sequence[Tensor]) -> ShardedReducer:
    """The reducer for DTensor parameters that share one device mesh and placements.

    Raises:
        ValueError: the parameters live on different meshes or are sharded differently
            (one surgeon per mesh is the fix).
    """
    mesh = params[0].device_mesh  # type: ignore[attr-defined]
    if any(p.device_mesh != mesh for p in params):  # type: ignore[attr-defined]
        raise ValueError(
            "Invalid params: DTensor parameters on several device meshes; use one surgeon per mesh"
        )
    dims: set[int] = set()
    for p in params:
        for dim, placement in enumerate(p.placements):  # type: ignore[attr-defined]
            if placement.is_shard():
                dims.add(dim)
            elif not placement.is_replicate():
                raise ValueError(
                    f"Invalid params: placement {placement} is not supported (Shard or Replicate)"
                )
    return ShardedReducer([mesh.get_group(dim) for dim in sorted(dims)])


def as_sharded_like(values: Tensor, param: Tensor) -> Tensor:
    """Wrap a local shard computed for ``param`` back into a DTensor placed like ``param``."""
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        values,
        param.device_mesh,  # type: ignore[attr-defined]
        param.placements,  # type: ignore[attr-defined]
        run_check=False,
        shape=param.shape,
        stride=param.stride(),
    )
