"""Direction buffers that :meth:`Surgeon.combine` reuses when the caller has let go of them.

``combine(main_grads, aux_grads)`` without ``out=`` returns new tensors. On the CPU a new
tensor of a few megabytes is fresh memory from the operating system every time (glibc maps
large blocks and gives them back on free), and touching it for the first time costs more than
the whole surgery (page faults and zeroing: ~2.5x ``foreach_add_`` at 20M float32 elements).
So the surgeon keeps the buffers of its last ``combine`` and writes the next direction into
them when NOTHING outside the surgeon refers to their memory any more: no returned tensor, no
view of one, no ``.grad`` holding one, no NumPy array sharing it. That is decided by the
reference count of each buffer's storage, which every tensor or view of it holds; a caller
who keeps any of them gets new tensors, so a returned direction is never overwritten.

Only CPU tensors are kept (CUDA's caching allocator already reuses memory); the cost is that
the last directions' memory stays allocated between calls (``release()`` frees it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["DirectionBuffers"]

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _references(t: Tensor) -> int:
    """How many tensors (and storage objects) share ``t``'s memory, or -1 if unknown."""
    if _use_count is None:
        return -1
    storage = t.untyped_storage()
    return int(_use_count(storage._cdata))


class DirectionBuffers:
    """The buffers of the last :meth:`Surgeon.combine` into new tensors, kept for reuse.

    Example:
        >>> import torch
        >>> buffers = DirectionBuffers()
        >>> grads = [torch.ones(1000)]
        >>> out = buffers.get(grads)          # new tensors the first time
        >>> first = buffers.hand_out(out)     # what combine returns
        >>> del first                         # the caller lets go
        >>> buffers.get(grads)[0] is out[0]   # so the next call writes into the same memory
        True
    """

    def __init__(self) -> None:
        self._kept: list[Tensor | None] | None = None
        self._free_count: list[int] = []

    def get(self, like: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Buffers shaped like ``like``: the kept ones if nobody else holds them, else new ones.

        New buffers (same shape, dtype, device and strides as ``like``; ``None`` where
        ``like`` is) are kept for the next call when they are CPU tensors.
        """
        reused = self._reusable(like)
        if reused is not None:
            return reused
        fresh = [None if g is None else torch.empty_like(g) for g in like]
        if _use_count is None or any(b is not None and b.device.type != "cpu" for b in fresh):
            self.release()
            return fresh
        self._kept = fresh
        # counted now, while nothing but this list refers to the new memory
        self._free_count = [-2 if b is None else _references(b) for b in fresh]
        return list(fresh)

    def hand_out(self, directions: Sequence[Tensor | None]) -> list[Tensor | None]:
        """What the caller gets: other tensor objects over the kept memory (``detach``).

        Each of them, and every view the caller makes, raises its storage's reference count
        above the count recorded when the buffer was new, which stops the buffer's reuse.
        """
        kept = {id(t) for t in self._kept or () if t is not None}
        return [d.detach() if d is not None and id(d) in kept else d for d in directions]

    def release(self) -> None:
        """Forget the kept buffers (their memory is freed once nobody else holds it)."""
        self._kept = None
        self._free_count = []

    def _reusable(self, like: Sequence[Tensor | None]) -> list[Tensor | None] | None:
        kept = self._kept
        if kept is None or len(kept) != len(like):
            return None
        for k, g, free in zip(kept, like, self._free_count):
            if (k is None) != (g is None):
                return None
            if k is None or g is None:
                continue
            if (
                k.shape != g.shape
                or k.dtype != g.dtype
                or k.device != g.device
                or k.stride() != g.stride()
                or _references(k) != free
            ):
                return None
        return list(kept)
