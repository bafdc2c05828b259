"""Typed surgeon state: a declared template of per-parameter buffers and scalar counters.

A method declares its state once, as a :class:`StateSpec`: the names of its per-parameter
buffer lists (one list per name, e.g. one EMA per priority level) and the dtype rule of those
buffers. The same declaration builds the zero template that distributed checkpointing loads
into, turns the buffers into the ``state_dict`` layout ``{param_index: {key: tensor}}``, and
validates a loaded state entry by entry before anything changes.

Example:
    >>> import torch
    >>> spec = StateSpec(keys=("main_grad_ema",))
    >>> params = [torch.zeros(2, dtype=torch.bfloat16)]
    >>> spec.zeros(params)[0][0].dtype  # low-precision parameters get float32 buffers
    torch.float32
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..distributed.sharded import local

__all__ = ["SCALARS", "StateSpec", "check_count"]

SCALARS = ("step", "skipped_steps")
"""The scalar state every surgeon keeps (non-negative ints), saved beside the buffers."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class StateSpec:
    """The per-parameter buffers of a method: one list (aligned with the parameters) per key.

    Attributes:
        keys: the state-dict key of each buffer list, in the method's order (for Bloop: the EMA
            of level 0, then level 1, ...). Empty for stateless methods.
        dtype: the buffers' dtype; ``None``: float32 for float16/bfloat16 parameters, else the
            parameter's dtype.
    """

    keys: tuple[str, ...] = ()
    dtype: torch.dtype | None = None

    def dtype_for(self, p: Tensor) -> torch.dtype:
        """The dtype of a buffer of parameter ``p``."""
        if self.dtype is not None:
            return self.dtype
        return torch.float32 if p.dtype in _LOW_PRECISION else p.dtype

    def zeros(self, params: Sequence[Tensor]) -> list[list[Tensor]]:
        """Zero buffers shaped, placed (and, for DTensor parameters, sharded) like ``params``."""
        return [
            [
                torch.zeros_like(p, dtype=self.dtype_for(p), memory_format=torch.contiguous_format)
                for p in params
            ]
            for _ in self.keys
        ]

    def to_dict(self, lists: Sequence[Sequence[Tensor]]) -> dict[int, dict[str, Tensor]]:
        """``{param_index: {key: buffer}}`` (the tensors themselves, not copies)."""
        if not self.keys:
            return {}
        n = len(lists[0])
        return {i: {key: lists[j][i] for j, key in enumerate(self.keys)} for i in range(n)}

    def from_dict(self, state: object, params: Sequence[Tensor]) -> list[list[Tensor]] | None:
        """Validate a loaded ``state`` entry and return new buffers, or ``None`` for no state.

        Every entry is checked (type, key set, shape) before any buffer is made; the buffers
        are copies in this spec's dtype on the parameter's device.

        Raises:
            ValueError: the state does not fit the parameters or this method's keys.
        """
        if not isinstance(state, Mapping):
            raise ValueError(
                f"Invalid state_dict: 'state' must be a dict, got {type(state).__name__}"
            )
        if not state:
            return None
        if not self.keys:
            raise ValueError("Invalid state_dict: this method keeps no per-parameter state")
        indices = sorted(state, key=str)
        if set(indices) != set(range(len(params))):
            raise ValueError(
                f"Invalid state_dict: state entries for indices {indices[:8]} do not fit "
                f"{len(params)} parameters (expected 0..{len(params) - 1})"
            )
        for i, p in enumerate(params):
            entry = state[i]
            if not isinstance(entry, Mapping) or set(entry) != set(self.keys):
                got = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
                raise ValueError(
                    f"Invalid state_dict: parameter {i} has state {got}, expected the keys "
                    f"{list(self.keys)}"
                )
            for key in self.keys:
                t = entry[key]
                if not isinstance(t, Tensor) or not t.is_floating_point():
                    raise ValueError(
                        f"Invalid state_dict: {key} of parameter {i} is not a floating-point tensor"
                    )
                if t.shape != p.shape:
                    raise ValueError(
                        f"Invalid state_dict: {key} of parameter {i} has shape "
                        f"{tuple(t.shape)}, the parameter {tuple(p.shape)}"
                    )
        return [
            [
                state[i][key].to(device=p.device, dtype=self.dtype_for(p), copy=True)
                for i, p in enumerate(params)
            ]
            for key in self.keys
        ]


def check_count(name: str, value: object) -> int:
    """A saved counter (``step``, ``skipped_steps``) must be an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Invalid state_dict: {name}={value!r} must be an int >= 0")
    return value


def local_lists(lists: Sequence[Sequence[Tensor]], index: Sequence[int]) -> list[list[Tensor]]:
    """The local shards of ``lists`` at the parameter positions ``index``."""
    return [[local(t[i]) for i in index] for t in lists]
