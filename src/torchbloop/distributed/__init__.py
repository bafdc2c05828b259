"""Distributed training: data parallelism (DDP), sharded parameters (FSDP2), checkpoints (DCP)."""

from .data_parallel import ProcessGroupArg, average_gradients_, data_parallel_group
from .sharded import (
    ShardedReducer,
    as_sharded_like,
    is_sharded,
    local,
    sharded_reducer,
)

__all__ = [
    "ProcessGroupArg",
    "ShardedReducer",
    "as_sharded_like",
    "average_gradients_",
    "data_parallel_group",
    "is_sharded",
    "local",
    "sharded_reducer",
]
