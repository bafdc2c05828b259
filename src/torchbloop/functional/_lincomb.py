"""Pass 2 on torch ops: write several linear combinations of tensor lists, aliasing-safe.

Every output ``o`` is ``sum_i c[o, i] * inputs[i]`` with 0-dim tensor coefficients (kept on the
device: no host synchronisation), per tensor when the coefficients differ between blocks. An
output may overwrite one of the inputs (the direction written over the aux gradients, an EMA
updated in place). Outputs are written in an order that respects aliasing: an output that
overwrites an input is written after every other output that reads that input; only a cycle
(two outputs each overwriting what the other reads) costs a temporary.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor

Scalars = Tensor | list[Tensor]
"""One 0-dim coefficient for all tensors, or one per tensor."""


def same_list(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Whether two lists hold the same tensor objects (checked at C speed)."""
    return a is b or (len(a) == len(b) and all(map(operator.is_, a, b)))


def _scale_(xs: list[Tensor], c: Scalars, foreach: bool) -> None:
    if foreach:
        torch._foreach_mul_(xs, c)
    else:
        for k, x in enumerate(xs):
            x.mul_(c if isinstance(c, Tensor) else c[k])


def _add_(xs: list[Tensor], ys: Sequence[Tensor], c: Scalars, foreach: bool) -> None:
    cs = c if isinstance(c, list) else [c] * len(xs)
    if foreach:
        torch._foreach_addcmul_(xs, list(ys), cs)
    else:
        for x, y, ck in zip(xs, ys, cs):
            x.addcmul_(y, ck)


def _fresh(ys: Sequence[Tensor], c: Scalars, like: Sequence[Tensor], foreach: bool) -> list[Tensor]:
    if foreach:
        result = list(torch._foreach_mul(list(ys), c))
    else:
        result = [y * (c if isinstance(c, Tensor) else c[k]) for k, y in enumerate(ys)]
    # A 0-dim tensor times a 0-dim coefficient promotes (bf16 * f32 -> f32): keep like's dtype.
    return [r if r.dtype == t.dtype else r.to(t.dtype) for r, t in zip(result, like)]


def lincomb(
    inputs: Sequence[Sequence[Tensor]],
    targets: Sequence[list[Tensor] | None],
    scalars: Sequence[Sequence[Scalars]],
    reads: Sequence[Sequence[int]],
    likes: Sequence[int],
    *,
    foreach: bool = True,
) -> list[list[Tensor]]:
    """Writes ``targets[o] = sum_{i in reads[o]} scalars[o][i] * inputs[i]`` for every output.

    Args:
        inputs: the input lists (aligned).
        targets: per output, the list to write (may be one of ``inputs``) or None for new
            tensors shaped and typed like ``inputs[likes[o]]``.
        scalars: ``scalars[o][i]``, the coefficient of input ``i`` in output ``o``.
        reads: per output, the inputs it reads (the others have coefficient 0).
        likes: per output, the input whose dtypes new tensors take.
        foreach: use the multi-tensor kernels.

    Returns:
        The written lists, one per output.
    """
    n_out = len(targets)
    aliases = [
        {i for i, x in enumerate(inputs) if w is not None and same_list(w, x)} for w in targets
    ]
    pending = list(range(n_out))
    order: list[tuple[int, bool]] = []  # (output, into a temporary)
    while pending:
        ready = [
            o for o in pending if not any(p != o and aliases[o] & set(reads[p]) for p in pending)
        ]
        if ready:
            order.append((ready[0], False))
            pending.remove(ready[0])
        else:  # a cycle: compute one output aside, write it last
            order.append((pending[0], True))
            pending.pop(0)
    results: list[list[Tensor] | None] = [None] * n_out
    deferred: list[tuple[list[Tensor], list[Tensor]]] = []
    for o, aside in order:
        target = targets[o]
        own = aliases[o] & set(reads[o])
        if target is not None and own and not aside:
            first, *rest = sorted(own)
            c = scalars[o][first]
            for i in rest:  # the same list read under several indices
                c = _sum(c, scalars[o][i])
            _scale_(target, c, foreach)
            for i in reads[o]:
                if i not in own:
                    _add_(target, inputs[i], scalars[o][i], foreach)
            results[o] = target
            continue
        if target is not None and not aside:  # a list no input is: write it in place
            if reads[o]:
                head, *tail = reads[o]
                _copy_(target, list(inputs[head]), foreach)
                _scale_(target, scalars[o][head], foreach)
                for i in tail:
                    _add_(target, inputs[i], scalars[o][i], foreach)
            else:
                _zero_(target, foreach)
            results[o] = target
            continue
        if not reads[o]:
            like = inputs[likes[o]]
            value = [torch.zeros_like(t) for t in like]
        else:
            head, *tail = reads[o]
            like = inputs[likes[o]] if target is None else target
            value = _fresh(inputs[head], scalars[o][head], like, foreach)
            for i in tail:
                _add_(value, inputs[i], scalars[o][i], foreach)
        if target is None:
            results[o] = value
        else:
            deferred.append((target, value))
            results[o] = target
    for target, value in deferred:
        _copy_(target, value, foreach)
    return [r for r in results if r is not None]


def _sum(a: Scalars, b: Scalars) -> Scalars:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a + b
    a_list = a if isinstance(a, list) else [a] * len(b)  # type: ignore[arg-type]
    b_list = b if isinstance(b, list) else [b] * len(a_list)
    return [x + y for x, y in zip(a_list, b_list)]


def _zero_(target: list[Tensor], foreach: bool) -> None:
    if foreach:
        torch._foreach_zero_(target)
    else:
        for t in target:
            t.zero_()


def _copy_(target: list[Tensor], value: list[Tensor], foreach: bool) -> None:
    if foreach:
        torch._foreach_copy_(target, value)
    else:
        for t, v in zip(target, value):
            t.copy_(v)
