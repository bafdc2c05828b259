r"""The surgery contract: inner products, a few coefficients, one linear-combination pass.

Every method of this library computes its step in three stages over the vectors it sees,
``v = [g_0, ..., g_K, s_0, ..., s_{m-1}]`` (the gradients of its ``K + 1`` losses, then its
``m`` state buffers such as EMAs), each vector a list of tensors aligned with the parameters:

1. **pass 1** (:meth:`SurgeryStep.gram`): the inner products the method needs, a Gram matrix
   :math:`G_{ij} = \langle v_i, v_j\rangle`, global over all tensors or per block, accumulated in
   float64 (one small collective when the lists are shards);
2. **coefficients** (:meth:`Formula.coefficients`): a small computation on those scalars, on
   the device, without host synchronisation, giving
   :math:`d = \sum_i c_i v_i` and the new state :math:`s_j \leftarrow \sum_i c_{ji} v_i`;
3. **pass 2** (:meth:`SurgeryStep.apply`): one pass that writes the direction and the state.

A method is therefore a :class:`Formula`: which inner products it needs and how it turns them
into coefficients. On plain contiguous CPU float32/float64 lists both passes run in the fused C
kernel (:mod:`._native`, one eligibility check: ``_native.usable``); everywhere else (CUDA,
DTensor shards, bf16, mixed dtypes, under ``torch.compile``) they run on torch ops.

Blocks. ``gram_blocks`` says which tensors share inner products: ``None``/``"global"`` (one
block: the paper's global inner products), ``"tensor"`` (every tensor its own block),
``"group"`` (the blocks of ``coef_blocks``), or one block id per tensor. ``coef_blocks`` (one
id per tensor, e.g. the parameter group) says which tensors share hyperparameters. The
coefficients are computed once per *effective block*, a pair (Gram block, coefficient block)
that occurs; formulas see a batch of them.

Hyperparameters. ``hyper`` maps names to values. Without ``coef_blocks`` a value is one setting
for every tensor: a number, or a sequence (e.g. one ``lam`` per level). With ``coef_blocks``, a
number is shared and a sequence (or a tensor with at least one dimension) holds one entry per
coefficient block (each entry a number or a sequence). Formulas receive float64 tensors whose
first dimension is the effective block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from . import _gram, _lincomb, _native
from ._types import Reducer, TensorList

Hyper = Mapping[str, "float | Sequence[float] | Sequence[Sequence[float]] | Tensor"]
"""Hyperparameter values by name (see the module docstring for per-block values)."""

GramBlocks = str | Sequence[int] | None
"""``None``/``"global"``, ``"group"``, ``"tensor"``, or one block id per tensor."""


class Coefficients(NamedTuple):
    """What a :class:`Formula` computes from the Gram matrix (leading dimension: the block)."""

    direction: Tensor
    """``[n_blocks, n_vectors]``: ``d = sum_i direction[b, i] * v_i`` on the tensors of block b."""
    state: Tensor
    """``[n_blocks, m, n_vectors]``: the new ``s_j = sum_i state[b, j, i] * v_i``."""
    info: dict[str, Tensor]
    """Method scalars for diagnostics (first dimension: the block), e.g. Bloop's ``"coef"``."""


@runtime_checkable
class Formula(Protocol):
    """One method: the inner products it needs and its coefficients (one per method file).

    Vector indices: ``0..K`` are the gradients ``g_0..g_K`` (``g_0`` the main loss), then
    ``K + 1 + j`` the state buffer ``s_j``. A formula may also define ``reads(k)`` (for each
    output, the vector indices it reads: row 0 the direction, row ``1 + j`` state ``j``, or
    ``None`` for a state buffer the step leaves unchanged; default: every output reads every
    vector; it decides the write order on the torch-op path and which buffers are written),
    ``check(hyper, k)`` (validates hyperparameters given as numbers, before anything runs) and
    ``gram_hyper(k)`` (names of hyperparameters the coefficients apply to the Gram itself, which
    must then be equal within each Gram block, e.g. Bloop's ``rho`` in "code" order).

    Example: a stateless two-loss method, "add the aux gradient only where it agrees":

        >>> import torch
        >>> from torchbloop.functional import Coefficients, SurgeryStep
        >>> class Agree:
        ...     name = "agree"
        ...     def num_state(self, k): return 0
        ...     def pairs(self, k): return [(0, 1)]
        ...     def coefficients(self, gram, k, hyper):
        ...         on = (gram[:, 0, 1] > 0).to(gram.dtype)
        ...         c = torch.stack([torch.ones_like(on), hyper["lam"] * on], dim=1)
        ...         return Coefficients(c, gram.new_zeros(gram.shape[0], 0, 2), {})
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]]
        >>> SurgeryStep(Agree(), g, [], hyper={"lam": 0.5}).apply().direction
        [tensor([1.5000, 0.5000])]
    """

    name: str

    def num_state(self, k: int) -> int:
        """How many state lists the method keeps for ``k`` auxiliary losses."""
        ...

    def pairs(self, k: int) -> Sequence[tuple[int, int]]:
        """The inner products ``(i, j)`` the coefficients read (the rest of the Gram is 0)."""
        ...

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        """Coefficients from ``gram`` (``[n_blocks, n, n]``, float64); no host sync."""
        ...


class StepResult(NamedTuple):
    """What :meth:`SurgeryStep.apply` returns."""

    direction: list[Tensor]
    """The direction, in ``out`` (or new tensors typed like ``g_0``)."""
    info: dict[str, Tensor]
    """The formula's diagnostics (first dimension: the effective block); no host sync."""
    sq_norms: Tensor | None
    """``[K + 1]``: ``||g_k||^2`` over all tensors (float64), None when no Gram was computed."""
    gram: Tensor | None
    """The Gram matrix ``[n_gram_blocks, n, n]`` (requested entries only), or None."""
    coefficients: Coefficients
    """The coefficients that were applied (per effective block)."""


class SurgeryStep:
    """One step of a :class:`Formula` on tensor lists, in two phases (:meth:`gram`, :meth:`apply`).

    Between the phases the caller can check finiteness (:meth:`surely_finite`) before anything
    is written. State lists are updated in place by :meth:`apply`; the direction goes into
    ``out`` (which may be one of the gradient lists) or new tensors.

    Args:
        formula: the method.
        grads: ``[g_0, ..., g_K]``, each a list of tensors aligned with the parameters (local
            shards when sharded).
        state: the method's state lists (``formula.num_state(K)`` of them), updated in place.
        hyper: hyperparameters by name (see the module docstring).
        out: where to write the direction (a gradient list, or other tensors); None: new.
        gram_blocks: which tensors share inner products (see the module docstring).
        coef_blocks: which tensors share hyperparameters: one block id per tensor.
        reduce: sums the stacked local inner products over the mesh (sharded lists: pass the
            local shards; the Gram pass also accepts DTensors and uses their local shards).
        foreach: use the multi-tensor kernels on the torch-op path.
        kernel: allow the fused CPU kernel (False forces torch ops).
        norms: also compute ``||g_k||^2`` of every gradient list in pass 1 (for the finiteness
            check and :attr:`StepResult.sq_norms`); False reads only the lists the formula's
            inner products need.

    Example:
        >>> import torch
        >>> from torchbloop.functional import BloopFormula, SurgeryStep
        >>> g0, g1 = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
        >>> ema = [torch.tensor([2.0, 0.0])]
        >>> step = SurgeryStep(BloopFormula(), [g0, g1], [ema], hyper={"lam": 0.5, "rho": 0.5})
        >>> step.gram()[0, 1, 2]  # <g_1, e_0>
        tensor(2., dtype=torch.float64)
        >>> step.apply().direction
        [tensor([1.0000, 0.5000])]
        >>> ema
        [tensor([1.5000, 0.0000])]
    """

    def __init__(
        self,
        formula: Formula,
        grads: Sequence[TensorList],
        state: Sequence[list[Tensor]],
        *,
        hyper: Hyper,
        out: list[Tensor] | None = None,
        gram_blocks: GramBlocks = None,
        coef_blocks: Sequence[int] | None = None,
        reduce: Reducer | None = None,
        foreach: bool = True,
        kernel: bool = True,
        norms: bool = True,
    ) -> None:
        if len(grads) < 2:
            raise ValueError(f"Invalid grads: {len(grads)} list(s); need g_0 and at least one g_k")
        self.formula = formula
        self.k = k = len(grads) - 1
        m = formula.num_state(k)
        if len(state) != m:
            raise ValueError(f"Invalid state: {formula.name} keeps {m} list(s), got {len(state)}")
        self.vectors: list[TensorList] = [*grads, *state]
        n_tensors = len(grads[0])
        for i, v in enumerate(self.vectors):
            if len(v) != n_tensors:
                raise ValueError(
                    f"Invalid lists: list {i} has {len(v)} tensors, g_0 has {n_tensors}"
                )
        if out is not None and len(out) != n_tensors:
            raise ValueError(f"Invalid out: {len(out)} tensors for {n_tensors} parameters")
        self.out = out
        self.reduce = reduce
        self.foreach = bool(foreach)
        reads = getattr(formula, "reads", None)
        n = len(self.vectors)
        self.reads: list[Sequence[int] | None] = (
            list(reads(k)) if reads is not None else [range(n)] * (1 + m)
        )
        for j in range(m):
            if self.reads[1 + j] is not None and any(_shares(state[j], g) for g in grads):
                raise ValueError(f"Invalid state: state list {j} shares tensors with a gradient")
        if out is not None and any(
            self.reads[1 + j] is not None and _shares(out, state[j]) for j in range(m)
        ):
            raise ValueError("Invalid out: it shares tensors with a state list the step updates")
        check = getattr(formula, "check", None)
        if check is not None:
            check(hyper, k)
        self.coef_of = list(coef_blocks) if coef_blocks is not None else [0] * n_tensors
        self.gram_of, self.n_gram = _gram_blocks(gram_blocks, self.coef_of, n_tensors)
        pairs_eff = sorted(set(zip(self.gram_of, self.coef_of)))
        index = {p: e for e, p in enumerate(pairs_eff)}
        self.eff_of = [index[p] for p in zip(self.gram_of, self.coef_of)]
        self.eff_gram = [g for g, _ in pairs_eff]
        self.eff_coef = [c for _, c in pairs_eff]
        n_coef = max(self.coef_of, default=-1) + 1
        self.hyper = {
            name: _hyper(name, v, coef_blocks is not None, n_coef) for name, v in hyper.items()
        }
        self._check_uniform(getattr(formula, "gram_hyper", None))
        wanted = {(min(i, j), max(i, j)) for i, j in formula.pairs(k)}
        self.norms = bool(norms)
        if self.norms:
            wanted |= {(i, i) for i in range(k + 1)}
        self._pairs = sorted(wanted)
        lists = [*self.vectors] + (
            [out] if out is not None and not _aliases(out, self.vectors) else []
        )
        self.native = kernel and not _compiling() and _native_usable(lists, n, 1 + m)
        self._gram: Tensor | None = None
        self._coefs: Coefficients | None = None
        self._applied = False

    def _check_uniform(self, gram_hyper: object) -> None:
        """Hyperparameters the formula applies to the Gram itself (Bloop's ``rho`` in code
        order) must be equal within each Gram block."""
        if gram_hyper is None:
            return
        for name in gram_hyper(self.k):  # type: ignore[operator]
            v = self.hyper.get(name)
            if v is None or v.shape[0] == 1 or not v.device.type == "cpu":
                continue
            for blk in range(self.n_gram):
                used = {c for g, c in zip(self.gram_of, self.coef_of) if g == blk}
                values = [v[c] for c in sorted(used)]
                if any(not torch.equal(values[0], x) for x in values[1:]):
                    raise ValueError(
                        f"Invalid {name}: {self.formula.name} needs one {name} per block of "
                        f"inner products (block {blk} has several); use gram_blocks='group'"
                    )

    # ------------------------------------------------------------------ phase 1

    def gram(self) -> Tensor:
        """Pass 1: ``[n_gram_blocks, n, n]`` float64 Gram of the needed pairs (and of every
        gradient list's square unless ``norms=False``; the other entries 0), reduced over the
        mesh. Reads only the lists those pairs involve. Computed once."""
        if self._gram is None:
            n = len(self.vectors)
            used = sorted({i for pair in self._pairs for i in pair})
            slot = {v: u for u, v in enumerate(used)}
            lists = [self.vectors[i] for i in used]
            local_pairs = [(slot[i], slot[j]) for i, j in self._pairs]
            squares = [p for p, (i, j) in enumerate(local_pairs) if i == j]
            numel = sum(t.numel() for t in lists[0]) if lists else 0
            fp32 = bool(lists) and all(t.dtype == torch.float32 for v in lists for t in v)
            packed = None
            if self.native and self._pairs:
                packed = _native.gram(
                    lists, local_pairs, block_of=self.gram_of, n_blocks=self.n_gram
                )
                if fp32 and not _gram.in_float32_range(packed, packed[:, squares], numel):
                    packed = None  # float32 lanes out of range: the float64 pass below
            if not self._pairs:
                g = torch.zeros((self.n_gram, n, n), dtype=torch.float64, device=self._device())
            elif packed is not None:
                ii = _on(packed.device, [i * n + j for i, j in self._pairs], torch.long)
                jj = _on(packed.device, [j * n + i for i, j in self._pairs], torch.long)
                g = packed.new_zeros((self.n_gram, n * n))
                g.index_copy_(1, ii, packed).index_copy_(1, jj, packed)
                g = g.view(self.n_gram, n, n)
            else:
                g = self._torch_gram(lists, local_pairs, squares, numel, fp32)
                if len(used) < n:  # place the used lists' Gram in the full matrix
                    pick = _on(g.device, used, torch.long)
                    full = g.new_zeros((self.n_gram, n, n))
                    full[:, pick[:, None], pick[None, :]] = g
                    g = full
                mask = [0.0] * (n * n)
                for i, j in self._pairs:
                    mask[i * n + j] = mask[j * n + i] = 1.0
                g = g * _on(g.device, mask, g.dtype).view(n, n)
            self._gram = self.reduce(g) if self.reduce is not None else g
        return self._gram

    def _torch_gram(
        self,
        lists: Sequence[TensorList],
        pairs: list[tuple[int, int]],
        squares: list[int],
        numel: int,
        fp32: bool,
    ) -> Tensor:
        """Pass 1 on torch ops. CPU float32 lists: float32 dots on views (no copy), checked on
        the host and redone in float64 when out of float32's range; elsewhere float64 products."""
        fast = fp32 and self._device().type == "cpu" and not _compiling()
        g = _gram.gram(
            lists, block_of=self.gram_of, n_blocks=self.n_gram, pairs=pairs, exact=not fast
        )
        if fast:
            entries = torch.stack([g[:, i, j] for i, j in pairs], dim=1)
            if not _gram.in_float32_range(entries, entries[:, squares], numel):
                g = _gram.gram(lists, block_of=self.gram_of, n_blocks=self.n_gram)
        return g

    def sq_norms(self) -> Tensor:
        """``[K + 1]``: the squared global norms of ``g_0..g_K`` (runs :meth:`gram`).

        Raises:
            RuntimeError: the step was built with ``norms=False``.
        """
        if not self.norms:
            raise RuntimeError("this SurgeryStep was built with norms=False")
        return self.gram().diagonal(dim1=1, dim2=2)[:, : self.k + 1].sum(0)

    def coefficients(self) -> Coefficients:
        """The formula's coefficients per effective block (computed once; no host sync)."""
        if self._coefs is None:
            needs_gram = bool(self.formula.pairs(self.k)) or self._gram is not None
            if needs_gram:
                g = self.gram()
            else:
                n = len(self.vectors)
                g = torch.zeros((self.n_gram, n, n), dtype=torch.float64, device=self._device())
            eff_g = g.index_select(0, _on(g.device, self.eff_gram, torch.long))
            hyper = {name: _on(g.device, v, torch.float64) for name, v in self._eff_hyper().items()}
            self._coefs = self.formula.coefficients(eff_g, self.k, hyper)
        return self._coefs

    def surely_finite(self) -> Tensor:
        """0-dim bool, no host sync: True only when every gradient and every output of
        :meth:`apply` is certainly finite, from the Gram's diagonal and the coefficients.

        The bound: ``||sum_i c_i v_i|| <= sum_i |c_i| ||v_i||`` below the largest value of the
        output's dtype (and every coefficient representable). False means "not known": call
        :meth:`outputs_finite` (an extra pass) to decide.
        """
        if not self.norms:
            raise RuntimeError("surely_finite() needs the gradients' norms: build with norms=True")
        g = self.gram()
        diag = g.diagonal(dim1=1, dim2=2)
        ok = torch.isfinite(diag[:, : self.k + 1]).all()
        coefs = self._output_coefs()
        norms = diag.index_select(0, _on(g.device, self.eff_gram, torch.long)).clamp(min=0).sqrt()
        bound = (coefs.abs() * norms[:, None, :]).sum(-1)  # [n_eff, n_out]
        limits = _on(bound.device, self._limits(), bound.dtype)
        coef_limit = torch.finfo(self._coef_dtype()).max
        ok = ok & (bound < limits / 4).all() & (coefs.abs() < coef_limit).all()
        return ok

    def outputs_finite(self) -> bool:
        """Exact: every output of :meth:`apply` is finite (computed aside; one host sync)."""
        scalars, reads, likes = self._plan()
        targets: list[list[Tensor] | None] = [None] * len(reads)
        values = _lincomb.lincomb(
            self.vectors, targets, scalars, reads, likes, foreach=self.foreach
        )
        flags = [
            torch.isfinite(torch.stack(torch._foreach_norm(v, math.inf))).all() for v in values if v
        ]
        return bool(torch.stack(flags).all()) if flags else True

    # ------------------------------------------------------------------ phase 2

    def apply(self) -> StepResult:
        """Pass 2: writes the direction (into ``out`` or new tensors) and the new state.

        Raises:
            RuntimeError: when called a second time (the state would be updated twice).
        """
        if self._applied:
            raise RuntimeError("SurgeryStep.apply() was already called: build a new step")
        self._applied = True
        coefs = self.coefficients()
        k, m = self.k, len(self.vectors) - self.k - 1
        written = [j for j in range(m) if self.reads[1 + j] is not None]
        targets: list[list[Tensor] | None] = [self.out]
        targets += [list(self.vectors[k + 1 + j]) for j in written]
        if self.native:
            direction = self.out
            if direction is None:
                direction = [torch.empty_like(t) for t in self.vectors[0]]
            outs = [direction] + [list(self.vectors[k + 1 + j]) for j in written]
            c = self._output_coefs().to("cpu", torch.float64)
            _native.lincomb(self.vectors, outs, c, block_of=self.eff_of)
        else:
            scalars, reads, likes = self._plan()
            direction = _lincomb.lincomb(
                self.vectors, targets, scalars, reads, likes, foreach=self.foreach
            )[0]
        return StepResult(
            direction,
            coefs.info,
            self.sq_norms() if self._gram is not None and self.norms else None,
            self._gram,
            coefs,
        )

    # ------------------------------------------------------------------ helpers

    def _eff_hyper(self) -> dict[str, Tensor]:
        """The hyperparameters per effective block (on the host when given as numbers)."""
        n_eff = len(self.eff_coef)
        return {
            name: v[self.eff_coef] if v.shape[0] > 1 else v.expand(n_eff, *v.shape[1:])
            for name, v in self.hyper.items()
        }

    def _written(self) -> list[int]:
        m = len(self.vectors) - self.k - 1
        return [j for j in range(m) if self.reads[1 + j] is not None]

    def _output_coefs(self) -> Tensor:
        """``[n_eff, n_out, n]``: the direction's row, then each written state's."""
        c = self.coefficients()
        rows = [c.direction[:, None, :]] + [c.state[:, j : j + 1, :] for j in self._written()]
        return torch.cat(rows, dim=1)

    def _plan(self) -> tuple[list[list[_lincomb.Scalars]], list[Sequence[int]], list[int]]:
        coefs = self._output_coefs().to(self._coef_dtype())
        reads = [self.reads[0]] + [self.reads[1 + j] for j in self._written()]
        likes = [0] + [self.k + 1 + j for j in self._written()]
        n_out, n = coefs.shape[1], coefs.shape[2]
        scalars: list[list[_lincomb.Scalars]] = []
        if coefs.shape[0] == 1:
            scalars = [list(row.unbind(0)) for row in coefs[0].unbind(0)]
        else:
            per = coefs.index_select(0, _on(coefs.device, self.eff_of, torch.long))
            per = per.permute(1, 2, 0)
            scalars = [[list(per[o, i].unbind(0)) for i in range(n)] for o in range(n_out)]
        return scalars, [list(r) for r in reads if r is not None], likes

    def _coef_dtype(self) -> torch.dtype:
        dtypes = {t.dtype for v in self.vectors for t in v[:1]}
        if self.out:
            dtypes.add(self.out[0].dtype)
        return torch.float64 if torch.float64 in dtypes else torch.float32

    def _limits(self) -> list[float]:
        """Per output, the largest finite value of its (smallest) dtype."""
        like = [self.out or self.vectors[0]] + [
            self.vectors[self.k + 1 + j] for j in self._written()
        ]
        return [min((torch.finfo(t.dtype).max for t in v), default=math.inf) for v in like]

    def _device(self) -> torch.device:
        first = self.vectors[0]
        return _gram.local(first[0]).device if first else torch.device("cpu")


_CACHE: dict[tuple[object, ...], Tensor] = {}


def stateless_direction(
    formula: Formula,
    grads: Sequence[TensorList],
    *,
    hyper: Mapping[str, Any],
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> list[Tensor]:
    """The direction of one step of a stateless formula (what the ``..._direction`` functions
    of the method files return): ``SurgeryStep(formula, grads, [], ...).apply().direction``.

    Example:
        >>> import torch
        >>> from torchbloop.functional.mixed import MixedFormula
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 2.0])]]
        >>> stateless_direction(MixedFormula(), g, hyper={"lam": 0.5})
        [tensor([1., 1.])]
    """
    step = SurgeryStep(formula, grads, [], hyper=hyper, out=out, foreach=foreach, reduce=reduce)
    return step.apply().direction


def _on(device: torch.device, values: Sequence[float] | Tensor, dtype: torch.dtype) -> Tensor:
    """``values`` as a tensor on ``device`` without a host synchronisation (cached; pinned
    memory and a non-blocking copy for accelerators)."""
    if isinstance(values, Tensor):
        if values.device == device:
            return values if values.dtype == dtype else values.to(dtype)
        key: tuple[object, ...] = (
            device,
            dtype,
            tuple(values.shape),
            tuple(values.reshape(-1).tolist()),
        )
    else:
        key = (device, dtype, tuple(values))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    host = values if isinstance(values, Tensor) else torch.tensor(list(values))
    host = host.to(dtype)
    if device.type == "cpu":
        result = host
    elif device.type == "cuda":
        result = host.pin_memory().to(device, non_blocking=True)
    else:
        result = host.to(device)
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = result
    return result


def _shares(a: TensorList, b: TensorList) -> bool:
    return a is b or bool(a and b and a[0] is b[0])


def _aliases(out: TensorList, lists: Sequence[TensorList]) -> bool:
    return any(_lincomb.same_list(out, v) for v in lists)


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


def _native_usable(lists: Sequence[TensorList], n_in: int, n_out: int) -> bool:
    """THE eligibility check of the kernel path: ``_native.usable`` (interface C), within the
    kernel's list counts."""
    if n_in > _native.MAX_INPUTS or n_out > _native.MAX_OUTPUTS:
        return False
    return _native.usable(lists)


def _gram_blocks(blocks: GramBlocks, coef_of: list[int], n_tensors: int) -> tuple[list[int], int]:
    if blocks is None or blocks == "global":
        return [0] * n_tensors, 1
    if blocks == "tensor":
        return list(range(n_tensors)), n_tensors
    if blocks == "group":
        return list(coef_of), max(coef_of, default=-1) + 1
    if isinstance(blocks, str):
        raise ValueError(
            f"Invalid gram_blocks={blocks!r}: must be 'global', 'group', 'tensor' or block ids"
        )
    ids = [int(b) for b in blocks]
    if len(ids) != n_tensors or any(b < 0 for b in ids):
        raise ValueError(f"Invalid gram_blocks: need {n_tensors} block ids >= 0, got {ids[:8]}")
    return ids, max(ids, default=-1) + 1


def _hyper(name: str, value: object, per_block: bool, n_blocks: int) -> Tensor:
    """A hyperparameter as a float64 tensor with a leading block dimension (1 if shared)."""
    t = value if isinstance(value, Tensor) else torch.tensor(value, dtype=torch.float64)
    t = t.detach().to(torch.float64)
    if not per_block or t.dim() == 0:
        return t.reshape(1, *t.shape)
    if t.shape[0] != n_blocks:
        raise ValueError(
            f"Invalid {name}: {t.shape[0]} per-block values for {n_blocks} coefficient blocks"
        )
    return t
