"""The fused CPU kernel of the surgery contract: all inner products in one pass, then all
linear combinations in one more (optional; torch ops otherwise).

Every method's step is (1) the inner products it needs over its vectors (gradients, state
buffers), (2) a few scalar coefficients, (3) one linear combination per output (the direction,
the new state). Eager torch ops run one kernel per inner product and per ``add``/``lerp``, each a
trip through memory, and on one CPU core their arithmetic, not the memory traffic, sets the pace.
:func:`gram` computes every requested inner product from one read of the lists, and
:func:`lincomb` writes every output from one read of its inputs, each in a single C loop over the
concatenated tensors (``fused_cpu.c``; built on first use, see :mod:`._build`).

Only aligned plain contiguous CPU float32/float64 lists are handled (:func:`usable`, the one
eligibility check); callers keep torch ops for everything else (CUDA, DTensor shards, bf16).
The tensors must stay alive and in place during a call; the calls release the GIL.
"""

from __future__ import annotations

import array
import ctypes
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

from ._build import available, library, status, use_cpu_kernel

__all__ = [
    "MAX_INPUTS",
    "MAX_OUTPUTS",
    "available",
    "gram",
    "library",
    "lincomb",
    "status",
    "usable",
    "use_cpu_kernel",
]

MAX_INPUTS = 8
"""Most lists :func:`gram` reads and :func:`lincomb` combines in one call."""
MAX_OUTPUTS = 4
"""Most output lists :func:`lincomb` writes in one call."""

_DTYPES = {torch.float32: 0, torch.float64: 1}
_MIN_PER_THREAD = 1 << 20
"""Elements per thread below which extra threads cost more than they save."""


def usable(lists: Sequence[Sequence[Tensor]]) -> bool:
    """Whether the kernel takes these lists: aligned lists (equal lengths, equal sizes tensor
    by tensor) of plain contiguous CPU tensors of one dtype, float32 or float64, none requiring
    grad; and the kernel is built and switched on.

    The checks are C-level ``map`` loops: a few tens of nanoseconds per tensor.

    Example:
        >>> import torch
        >>> from torchbloop.functional import _native
        >>> x = [torch.ones(3), torch.ones(2)]
        >>> _native.usable([x, [t.double() for t in x]])
        False
    """
    if not lists or not lists[0]:
        return False
    first = lists[0]
    if not isinstance(first[0], Tensor) or first[0].dtype not in _DTYPES:
        return False
    sizes = list(map(Tensor.numel, first))
    dtype = first[0].dtype
    for tensors in lists:
        if len(tensors) != len(first):
            return False
        if tensors is not first and list(map(Tensor.numel, tensors)) != sizes:
            return False
        if set(map(type, tensors)) != {Tensor} or set(map(_dtype, tensors)) != {dtype}:
            return False
        if not all(map(_is_cpu, tensors)) or any(map(_requires_grad, tensors)):
            return False
        if not all(map(Tensor.is_contiguous, tensors)):
            return False
    return available()


_dtype = operator.attrgetter("dtype")
_is_cpu = operator.attrgetter("is_cpu")
_requires_grad = operator.attrgetter("requires_grad")


def gram(
    lists: Sequence[Sequence[Tensor]],
    pairs: Sequence[tuple[int, int]],
    *,
    block_of: Sequence[int] | None = None,
    n_blocks: int = 1,
) -> Tensor:
    """Inner products of lists, all from one read of each list.

    ``result[b, p] = sum over the tensors t with block_of[t] == b of <lists[i][t], lists[j][t]>``
    for ``(i, j) = pairs[p]``; without ``block_of`` every tensor is in block 0. Products are
    summed in vector lanes of the element type over chunks of 4096 elements, then in double.

    Args:
        lists: up to :data:`MAX_INPUTS` lists that satisfy :func:`usable`.
        pairs: list indices; repeated pairs are computed once.
        block_of: the block of each tensor, in ``[0, n_blocks)``.
        n_blocks: number of blocks.

    Returns:
        A float64 CPU tensor ``[n_blocks, len(pairs)]``.

    Raises:
        ValueError: too many lists, an index out of range, or a bad ``block_of``.

    Example:
        >>> import torch
        >>> from torchbloop.functional import _native
        >>> x, y = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])], [torch.ones(2), torch.ones(1)]
        >>> if _native.usable([x, y]):
        ...     print(_native.gram([x, y], [(0, 0), (0, 1)], block_of=[0, 1], n_blocks=2))
        ... else:
        ...     print("tensor([[5., 3.],\\n        [9., 3.]], dtype=torch.float64)")
        tensor([[5., 3.],
                [9., 3.]], dtype=torch.float64)
    """
    lib = _library()
    if not 1 <= len(lists) <= MAX_INPUTS:
        raise ValueError(f"gram takes 1 to {MAX_INPUTS} lists, got {len(lists)}")
    result = torch.empty(n_blocks, len(pairs), dtype=torch.float64)
    flat = array.array("i", [int(k) for pair in pairs for k in pair])
    if len(flat) != 2 * len(pairs):
        raise ValueError(f"pairs must be (i, j) tuples, got {pairs!r}")
    count = len(lists[0])
    blocks = _blocks(block_of, count, n_blocks)
    pointers = _pointers(lists)
    sizes = array.array("q", map(Tensor.numel, lists[0]))
    code = lib.torchbloop_gram(
        _DTYPES[lists[0][0].dtype],
        count,
        _address(sizes),
        len(lists),
        _address(pointers),
        len(pairs),
        _address(flat),
        _address(blocks) if blocks is not None else None,
        n_blocks,
        _threads(sum(sizes)),
        result.data_ptr(),
    )
    _raise_for(code, f"gram: pairs {list(pairs)} over {len(lists)} lists, {n_blocks} blocks")
    return result


def lincomb(
    inputs: Sequence[Sequence[Tensor]],
    outputs: Sequence[Sequence[Tensor]],
    coefs: Tensor,
    *,
    block_of: Sequence[int] | None = None,
) -> None:
    """Writes linear combinations of lists, all outputs from one read of the inputs.

    For every element: ``outputs[o][t] = sum_i coefs[block_of[t], o, i] * inputs[i][t]``, in
    the element type. An output list may be an input list (the same tensors): all inputs of an
    element are read before any output of it is written. Outputs must not overlap inputs or
    each other otherwise. A zero coefficient times a non-finite input is NaN (IEEE arithmetic).

    Args:
        inputs: up to :data:`MAX_INPUTS` lists. outputs: up to :data:`MAX_OUTPUTS` lists; all
            together satisfy :func:`usable`.
        coefs: ``[n_blocks, len(outputs), len(inputs)]`` (read as float64 host values).
        block_of: the block of each tensor (default: all in block 0, and ``n_blocks == 1``).

    Raises:
        ValueError: too many lists, ``coefs`` of the wrong shape, a bad ``block_of``, or an
            output that overlaps another list without being the same tensors.

    Example:
        >>> import torch
        >>> from torchbloop.functional import _native
        >>> x, y = [torch.tensor([1.0, 2.0])], [torch.tensor([10.0, 20.0])]
        >>> if _native.usable([x, y]):
        ...     _native.lincomb([x, y], [y], torch.tensor([[[2.0, 0.5]]]))
        ... else:
        ...     y[0].copy_(torch.tensor([7.0, 14.0]))
        >>> y
        [tensor([ 7., 14.])]
    """
    lib = _library()
    if not 1 <= len(inputs) <= MAX_INPUTS or not 1 <= len(outputs) <= MAX_OUTPUTS:
        raise ValueError(
            f"lincomb takes 1 to {MAX_INPUTS} inputs and 1 to {MAX_OUTPUTS} outputs, got "
            f"{len(inputs)} and {len(outputs)}"
        )
    coefs = coefs.detach().to("cpu", torch.float64).contiguous()
    if coefs.dim() != 3 or coefs.shape[1:] != (len(outputs), len(inputs)):
        raise ValueError(
            f"coefs must have shape [n_blocks, {len(outputs)}, {len(inputs)}], got "
            f"{tuple(coefs.shape)}"
        )
    n_blocks = coefs.shape[0]
    count = len(inputs[0])
    if block_of is None and n_blocks != 1:
        raise ValueError(f"coefs has {n_blocks} blocks: pass block_of")
    blocks = _blocks(block_of, count, n_blocks)
    sizes = array.array("q", map(Tensor.numel, inputs[0]))
    sources, targets = _pointers(inputs), _pointers(outputs)  # alive until the call returns
    code = lib.torchbloop_lincomb(
        _DTYPES[inputs[0][0].dtype],
        count,
        _address(sizes),
        len(inputs),
        _address(sources),
        len(outputs),
        _address(targets),
        coefs.data_ptr(),
        _address(blocks) if blocks is not None else None,
        n_blocks,
        _threads(sum(sizes)),
    )
    _raise_for(code, f"lincomb: {len(inputs)} inputs, {len(outputs)} outputs")


def _library() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError(f"{status()}: check usable() before calling the kernel")
    return lib


def _pointers(lists: Sequence[Sequence[Tensor]]) -> array.array[int]:
    pointers = array.array("q")
    for tensors in lists:
        pointers.extend(map(Tensor.data_ptr, tensors))
    return pointers


def _blocks(block_of: Sequence[int] | None, count: int, n_blocks: int) -> array.array[int] | None:
    if n_blocks < 1:
        raise ValueError(f"Invalid n_blocks={n_blocks}: must be >= 1")
    if block_of is None:
        return None
    blocks = array.array("q", block_of)
    if len(blocks) != count:
        raise ValueError(f"block_of has {len(blocks)} entries for {count} tensors")
    return blocks


def _address(values: array.array[int]) -> int:
    return values.buffer_info()[0]


def _threads(total: int) -> int:
    return max(1, min(torch.get_num_threads(), total // _MIN_PER_THREAD))


def _raise_for(code: int, what: str) -> None:
    if code == -1:
        raise MemoryError(f"{what}: out of memory")
    if code == -2:
        raise ValueError(f"{what}: a list index or a block index is out of range")
    if code == -3:
        raise ValueError(f"{what}: an output overlaps an input or another output")
