r"""Lean capture: the surgery inside ``.grad``, with ordinary ``Tensor.backward`` calls.

The separate capture (:func:`._gradients.capture_gradients`) keeps one gradient list per loss
and combines them into a direction: at its peak it holds two parameter-sized gradient lists
besides the state. Lean capture lets every backward pass accumulate into ``.grad`` and edits
``.grad`` in place between the passes, so that no second gradient list ever exists: Bloop then
costs plain training plus its EMA. The passes are the surgery contract's (a Gram pass and a
linear-combination pass of :class:`~torchbloop.functional.SurgeryStep`, on the fused CPU kernel
where it applies), and the projection coefficient is :class:`~torchbloop.functional.BloopFormula`'s.

Bloop, one auxiliary loss (method.md sections 2 and 3), ``a = lam * pi(g_aux; e)``:

* **paper order** (project on the EMA of the previous steps): backward ``L_aux`` into ``.grad``;
  Gram pass ``<g_aux, e>``, ``||e||^2``, ``||g_aux||^2``; one pass writes ``.grad <- a`` (the
  formula's coefficients) and one ``e <- (1 - rho) e - rho .grad``; backward ``L_main``, which
  accumulates ``.grad = g_main + a = d``; last pass ``e <- e + rho .grad = (1 - rho) e + rho
  g_main``. The last pass cancels ``rho * a`` out of the EMA: its extra rounding is about rho
  times the direction's own (``eps * rho * ||a||``; measured in ``tests/surgeons/test_lean.py``).
* **code order** (update the EMA first, project on the new one): backward ``L_main`` into
  ``.grad``; Gram pass ``||g_main||^2``, ``<g_main, e>``, ``||e||^2``; one pass ``e <- (1 -
  rho) e + rho g_main``; backward ``L_aux`` seeded with ``lam``, accumulating ``.grad = g_main +
  lam g_aux``; Gram pass ``<.grad, e>``, ``||e||^2``, ``||.grad||^2``, where ``lam <g_aux, e> =
  <.grad, e> - <g_main, e>`` (the last term from the first Gram, as the formula writes the new
  EMA through the old vectors); one pass ``.grad <- .grad - lam c e``. The difference of inner
  products is exact up to the rounding of ``.grad`` itself: the coefficient is off by about
  ``eps * ||d|| / ||e||``, i.e. the direction by its own rounding.
* **first step** of either order (the EMA starts from ``g_main``, so both orders project on
  it): backward ``L_main``; the EMA takes over the buffers of ``g_main`` (it must be created
  anyway) and ``.grad`` is emptied; backward ``L_aux`` seeded with ``lam`` into ``.grad``; one
  Gram pass, one pass ``.grad <- lam g_aux + (1 - lam c) g_main``. No cancellation, and the EMA
  is installed only when the step succeeds.
* **Mixed**: ``L_main`` backward, then every ``L_k`` seeded with ``lam_k``, accumulating.

A step is lean only where the backward passes accumulate into ``.grad`` for every parameter:
the peak of lean Bloop is where the main gradient arrives while ``.grad`` (the projected aux
term) and the EMA are alive, i.e. plain training plus the EMA when the model's gradient comes
in pieces, and at worst one incoming gradient tensor more (``benchmarks/memory.py``).

What does not carry over, and runs the separate capture (``capture="auto"``) or raises
(``capture="lean"``): several auxiliary losses (a level between the first and the last needs
its raw gradient for its EMA and its weighted projection for the direction, two lists, or a
division by its ``lam`` that cancels as ``rho / lam``); diagnostics (the leak and the cosines
need inner products of ``g_main`` with ``g_aux`` that no pass sees); gradient accumulation,
loss scalers, data-parallel averaging and sharded parameters (they hold or reduce the gradients
per loss); a parameter group with ``lam = 0`` (it sits out); per-group ``lam`` in code order and
on the first step (one backward pass cannot weight groups differently).

A step whose first backward pass does not reach every parameter that requires grad (e.g. an
aux loss on the weights only, or a parameter no loss reaches), or whose second loss is not seen
to reach a parameter (:func:`reaches`: a walk of its graph, blind inside reentrant activation
checkpoints), captures the other loss separately: the first gradient is already in ``.grad``,
so no backward pass is repeated; the step costs the separate path's memory and gives exactly
its result.

Failures. Everything the first backward pass gives (the gradient, the loss values of all
losses, a direction that would overflow) and whether the second loss reaches a parameter are
checked before anything changes. The second gradient can only be checked once it has been
folded into ``.grad``, after the EMA was advanced (paper and code order; not on step 1): a
non-finite second gradient restores ``.grad`` but not the EMA, which lean capture cannot
rebuild without the copy it saves; the EMA then restarts from the next step's main gradient
(as on step 1), and the error says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from .._validation import NonFiniteGradientError, check_grad_list
from ..amp import autocast_disabled
from ..functional import BloopFormula, Coefficients, SurgeryStep
from ._finite import finite_flag
from ._gradients import GradList
from ._stages import capture, check_captured, loss_names

if TYPE_CHECKING:
    from ._base import Surgeon
    from .bloop import Bloop

Capture = Literal["auto", "lean", "separate"]
CAPTURES = ("auto", "lean", "separate")

__all__ = ["CAPTURES", "Capture", "lean_bloop", "lean_mixed", "reaches"]


# --------------------------------------------------------------------------- the passes' formulas


def _bloop_layout(gram: Tensor, g_aux_e: Tensor, e_e: Tensor) -> Tensor:
    """The ``[B, 3, 3]`` Gram of ``[g_0, g_1, e_0]`` that paper-order Bloop reads
    (``<g_1, e_0>``, ``||e_0||^2``; the entries of ``g_0`` are not read without the leak)."""
    full = gram.new_zeros((gram.shape[0], 3, 3))
    full[:, 1, 2] = full[:, 2, 1] = g_aux_e
    full[:, 2, 2] = e_e
    return full


class _Projection:
    """``[G, E] -> G <- lam * pi(G; E)`` with Bloop's coefficient and skip rule.

    ``offset`` (code order): ``G`` holds ``g_main + lam g_aux`` and the per-block
    ``<g_main, e>`` is subtracted from ``<G, E>``; ``lam`` is then 1 (already in ``G``).
    """

    name = "bloop_lean_projection"

    def __init__(
        self,
        offset: Callable[[Tensor], Tensor] | None = None,
        *,
        seeded: bool = False,
        main_is_e: bool = False,
    ) -> None:
        self.bloop = BloopFormula("paper", leak=False)
        self.offset = offset
        self.seeded = seeded or offset is not None
        self.main_is_e = main_is_e

    def num_state(self, k: int) -> int:
        del k
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        del k
        return [(0, 1), (1, 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        self.bloop.check(hyper, k)

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        dot = gram[:, 0, 1]
        lam = hyper["lam"]
        if self.offset is not None:
            dot = dot - self.offset(hyper["rho"].reshape(-1))
        if self.seeded:  # G was weighted by the backward pass's seed
            lam = torch.ones_like(lam)
        c = self.bloop.coefficients(
            _bloop_layout(gram, dot, gram[:, 1, 1]), 1, {"lam": lam, "rho": hyper["rho"]}
        )
        direction = c.direction[:, 1:]
        if self.main_is_e:  # first step: E holds g_main itself, which the direction adds
            direction = direction + torch.tensor(
                [0.0, 1.0], dtype=direction.dtype, device=direction.device
            )
        return Coefficients(direction, gram.new_zeros((gram.shape[0], 0, 2)), c.info)


class _Blend:
    """``[X, Y] -> X <- a(rho) X + b(rho) Y``: the EMA's passes (``pairs`` for a Gram read with it)."""

    name = "bloop_lean_ema"

    def __init__(
        self, a: Callable[[Tensor], Tensor], b: Callable[[Tensor], Tensor], *, dots: bool = False
    ) -> None:
        self.a, self.b, self.dots = a, b, dots

    def num_state(self, k: int) -> int:
        del k
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        del k
        return [(0, 1)] if self.dots else []

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        rho = hyper["rho"].reshape(gram.shape[0], -1)[:, 0]
        direction = torch.stack([self.a(rho), self.b(rho)], dim=1)
        return Coefficients(direction, gram.new_zeros((gram.shape[0], 0, 2)), {})


# --------------------------------------------------------------------------- backward passes


def _set_aside(live: Sequence[Tensor]) -> list[Tensor | None]:
    saved = [p.grad for p in live]
    for p in live:
        p.grad = None
    return saved


def _restore(live: Sequence[Tensor], saved: Sequence[Tensor | None]) -> None:
    for p, g in zip(live, saved):
        p.grad = g


def _backward(loss: Tensor, *, weight: float, retain: bool) -> None:
    """``weight * loss`` backward (seeded with ``weight``), accumulating into ``.grad``."""
    seed = None
    if (
        weight != 1.0
    ):  # a weight beyond the loss's dtype becomes inf: caught as a non-finite direction
        seed = torch.as_tensor(weight, dtype=torch.float64).to(loss.dtype).expand_as(loss)
    torch.autograd.backward(loss, grad_tensors=seed, retain_graph=retain)


def reaches(loss: Tensor, params: Sequence[Tensor]) -> bool:
    """Whether the graph of ``loss`` holds one of ``params`` as a leaf (a walk that stops at the
    first one found). A parameter inside a reentrant activation checkpoint is not an edge of
    the graph: False means "not seen", and the caller then captures that loss separately."""
    wanted = {id(p) for p in params}
    root = loss.grad_fn
    if root is None:
        return False
    stack = [root]
    kept = [root]  # keeps the visited nodes alive, so that their ids stay unique
    seen = {id(root)}
    while stack:
        node = stack.pop()
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) in wanted:
            return True
        for nxt, _ in node.next_functions:
            if nxt is not None and id(nxt) not in seen:
                seen.add(id(nxt))
                kept.append(nxt)
                stack.append(nxt)
    return False


def _finish(
    params: Sequence[Tensor], live: Sequence[Tensor], saved: Sequence[Tensor | None]
) -> None:
    """The direction is in ``.grad``: put it into the buffers ``.grad`` held before (keeping
    their memory format, as the separate path does); untouched parameters get theirs back."""
    del params
    for p, old in zip(live, saved):
        if p.grad is None:
            p.grad = old
        elif old is not None:
            old.copy_(p.grad)
            p.grad = old


def _fallback(
    surgeon: Surgeon,
    live: list[Tensor],
    saved: list[Tensor | None],
    first: list[Tensor | None],
    rest: Sequence[Tensor],
    *,
    main_first: bool,
    allow_unused: bool,
) -> list[GradList]:
    """The first loss did not reach every parameter: capture the others separately (the
    first gradient is already in hand, so no backward pass is repeated)."""
    captured = [first]
    try:
        for n, loss in enumerate(rest):
            for p in live:
                p.grad = None
            torch.autograd.backward(loss, retain_graph=n < len(rest) - 1)
            captured.append([p.grad for p in live])
    finally:
        _restore(live, saved)
    pos = {id(p): j for j, p in enumerate(live)}

    def aligned(values: list[Tensor | None]) -> GradList:
        return [values[pos[id(p)]] if id(p) in pos else None for p in surgeon._params]

    grads = [aligned(g) for g in captured]
    if not main_first:  # paper-order Bloop: aux went first
        grads = grads[::-1]
    return check_captured(surgeon._params, grads, allow_unused=allow_unused)


# --------------------------------------------------------------------------- finiteness


def _first_check(
    surgeon: Surgeon,
    step: SurgeryStep,
    losses: Sequence[Tensor],
    name: str,
    extra_bound: Tensor | None = None,
) -> bool:
    """Before anything changes: every loss value, the first gradient (its squared norm from
    ``step``'s Gram) and the outputs (``step``'s bound; ``extra_bound``: another output's
    norm bound). One host sync; a "no" is confirmed exactly before it is reported."""
    gram = step.gram()
    values = torch.stack([loss.detach().to(gram.device, torch.float64) for loss in losses])
    flags = [
        torch.isfinite(values).all(),
        torch.isfinite(gram[:, 0, 0]).all(),
        step.surely_finite(),
    ]
    if extra_bound is not None:
        limit = torch.finfo(step.vectors[1][0].dtype).max / 4
        flags.append((extra_bound < limit).all())
    if bool(torch.stack(flags).all()):
        return True
    names = loss_names(len(losses) - 1)
    bad = [n for n, v in zip(names, values.tolist()) if v != v or abs(v) == float("inf")]
    if not bool(finite_flag(list(step.vectors[0]), None, gram.device, exact=True)):
        bad.append(name)
    if bad:
        bad = list(dict.fromkeys(bad))
        message = (
            f"Non-finite {' and '.join(bad)} loss or gradient (inf or NaN); nothing was changed."
        )
    else:
        message = (
            "Non-finite direction (inf or NaN) from finite losses and gradients: a weight (lam) "
            "too large for these gradients; nothing was changed."
        )
    return _fail(surgeon, message, changed=False)


def _fail(surgeon: Surgeon, message: str, *, changed: bool) -> bool:
    """Raise, or count a skipped step (``nonfinite="skip"``); ``changed``: the EMA was advanced
    and restarts."""
    if changed:
        _restart_state(surgeon)
        message += (
            " .grad was restored; the EMA could not be (lean capture keeps no copy of it) and "
            "restarts from the next step's main gradient. capture='separate' keeps it."
        )
    if surgeon.nonfinite == "raise":
        raise NonFiniteGradientError(message + " Pass nonfinite='skip' to skip such steps instead.")
    surgeon.skipped_steps += 1
    surgeon._on_skipped_step()
    return False


def _restart_state(surgeon: Surgeon) -> None:
    surgeon._set_state_lists(None)


# --------------------------------------------------------------------------- Mixed


def lean_mixed(
    surgeon: Surgeon, losses: Sequence[Tensor], *, allow_unused: bool
) -> list[GradList] | None:
    """Mixed in ``.grad``: ``L_main`` backward, then each ``L_k`` seeded with ``lam_k``,
    accumulating; ``None`` when done, else the gradients captured separately (the caller
    combines them).

    Nothing changes on an error (Mixed keeps no state), but a non-finite gradient of an aux
    loss is reported as the direction's: the losses' gradients never exist apart.
    """
    params = surgeon._params
    live = [p for p in params if p.requires_grad]
    if not live:  # nothing to accumulate into: the separate capture says what is wrong
        return capture(params, losses, allow_unused=allow_unused)
    lams = surgeon.lams
    saved = _set_aside(live)
    try:
        torch.autograd.backward(losses[0], retain_graph=True)
        first = [p.grad for p in live]
        if any(g is None for g in first) or not all(reaches(loss, live) for loss in losses[1:]):
            return _fallback(
                surgeon, live, saved, first, losses[1:], main_first=True, allow_unused=allow_unused
            )
        check_grad_list("main gradient", first, live)
        for n, (loss, lam) in enumerate(zip(losses[1:], lams)):
            _backward(loss, weight=lam, retain=n < len(lams) - 1)
        direction = [p.grad for p in live]
        check_grad_list("direction", direction, live)
        dense = [t for t in direction if t is not None]
        if not _finite(dense, losses):
            _restore(live, saved)
            _fail(surgeon, _second_message(losses, "gradient of a loss"), changed=False)
            return None
    except BaseException:
        _restore(live, saved)
        raise
    _finish(params, live, saved)
    surgeon.step_count += 1
    return None


def _finite(tensors: list[Tensor], losses: Sequence[Tensor]) -> bool:
    """The loss values and ``tensors`` are finite (one sync; a "no" confirmed exactly)."""
    device = tensors[0].device
    values = torch.stack([loss.detach().to(device, torch.float64) for loss in losses])
    if bool(torch.isfinite(values).all() & finite_flag(tensors, None, device)):
        return True
    return bool(torch.isfinite(values).all()) and bool(
        finite_flag(tensors, None, device, exact=True)
    )


def _bad_losses(losses: Sequence[Tensor]) -> list[str]:
    names = loss_names(len(losses) - 1)
    values = [float(loss.detach().double()) for loss in losses]
    return [n for n, v in zip(names, values) if v != v or abs(v) == float("inf")]


def _second_message(losses: Sequence[Tensor], what: str) -> str:
    bad = _bad_losses(losses)
    if bad:
        return f"Non-finite {' and '.join(bad)} loss or gradient (inf or NaN)."
    return (
        f"Non-finite direction (inf or NaN): the {what} is not finite, or a weight (lam) is too "
        "large for it (lean capture sums the gradients in .grad; capture='separate' tells "
        "them apart). Nothing was changed."
    )


# --------------------------------------------------------------------------- Bloop


def lean_bloop(
    surgeon: Bloop, losses: Sequence[Tensor], *, allow_unused: bool
) -> list[GradList] | None:
    """One Bloop step in ``.grad`` (K = 1); ``None`` when done, else the gradients captured
    separately (the first loss did not reach every parameter, or the second was not seen to
    reach one): the caller combines them as the separate path does."""
    params = surgeon._params
    live = [p for p in params if p.requires_grad]
    if not live:  # nothing to accumulate into: the separate capture says what is wrong
        return capture(params, losses, allow_unused=allow_unused)
    if surgeon.emas is None:
        return _bloop_first_step(surgeon, live, losses, allow_unused=allow_unused)
    main, aux = losses
    main_first = surgeon.ema_order == "code"
    first_loss, second_loss = (main, aux) if main_first else (aux, main)
    saved = _set_aside(live)
    advanced = False
    try:
        torch.autograd.backward(first_loss, retain_graph=True)
        first = [p.grad for p in live]
        if any(g is None for g in first) or not reaches(second_loss, live):
            return _fallback(
                surgeon,
                live,
                saved,
                first,
                [second_loss],
                main_first=main_first,
                allow_unused=allow_unused,
            )
        grads = check_grad_list("main gradient" if main_first else "aux gradient", first, live)
        index = [i for i, p in enumerate(params) if p.requires_grad]
        hyper, coef_blocks, gram_blocks, _ = surgeon._blocks(index)
        dense = [g for g in grads if g is not None]
        run = _Run(surgeon, index, dense, hyper, coef_blocks, gram_blocks)
        with autocast_disabled(params):
            ok = run.main_first(losses) if main_first else run.aux_first(losses)
            if not ok:
                _restore(live, saved)
                return None
            advanced = True
            _backward(second_loss, weight=surgeon.lams[0] if main_first else 1.0, retain=False)
            direction = [p.grad for p in live]
            check_grad_list("direction", direction, live)
            ok = run.finish_main_first(direction) if main_first else run.finish_aux_first(direction)
            if not ok:  # skipped (the EMA restarted)
                _restore(live, saved)
                return None
    except BaseException:
        _restore(live, saved)
        if advanced:
            _restart_state(surgeon)
        raise
    _finish(params, live, saved)
    surgeon.step_count += 1
    return None


def _bloop_first_step(
    surgeon: Bloop, live: list[Tensor], losses: Sequence[Tensor], *, allow_unused: bool
) -> list[GradList] | None:
    """Step 1 (either order projects on ``g_main``, the EMA's start): backward ``L_main``; the
    EMA takes over the buffers of ``g_main`` (it is created from it anyway), ``.grad`` is
    emptied; backward ``L_aux`` seeded with ``lam`` into ``.grad``; one Gram pass
    ``<lam g_aux, g_main>``, ``||g_main||^2``, ``||lam g_aux||^2``; one pass ``.grad <- lam
    g_aux + (1 - lam c) g_main``. The EMA is kept only if the step succeeds, so nothing changes
    on any failure."""
    params = surgeon._params
    main, aux = losses
    saved = _set_aside(live)
    try:
        torch.autograd.backward(main, retain_graph=True)
        first = [p.grad for p in live]
        if any(g is None for g in first) or not reaches(aux, live):
            return _fallback(
                surgeon, live, saved, first, [aux], main_first=True, allow_unused=allow_unused
            )
        grads = [g for g in check_grad_list("main gradient", first, live) if g is not None]
        index = [i for i, p in enumerate(params) if p.requires_grad]
        hyper, coef_blocks, gram_blocks, _ = surgeon._blocks(index)
        run = _Run(surgeon, index, grads, hyper, coef_blocks, gram_blocks)
        with autocast_disabled(params):
            probe = run._step(_Blend(lambda r: 1 - r, lambda r: r), [grads, grads], grads)
            if not _check_main(surgeon, probe.gram()[:, :1, :1], losses, grads):
                _restore(live, saved)
                return None
            spec = surgeon.state_spec()
            taken = dict(zip(index, grads))
            fresh = [
                [
                    _as_buffer(taken[i], spec.dtype_for(p))
                    if i in taken
                    else torch.zeros_like(p, dtype=spec.dtype_for(p))
                    for i, p in enumerate(params)
                ]
            ]
            emas = [fresh[0][i] for i in index]
            for p in live:
                p.grad = None
            _backward(aux, weight=surgeon.lams[0], retain=False)
            for p in live:
                if p.grad is None:  # not reached by the aux loss: its gradient is zero there
                    p.grad = torch.zeros_like(p)
            weighted = [p.grad for p in live]
            check_grad_list("aux gradient", weighted, live)
            dense = [g for g in weighted if g is not None]
            step = run._step(_Projection(seeded=True, main_is_e=True), [dense, emas], dense)
            gram = step.gram()
            ok = torch.isfinite(gram[:, 0, 0]).all() & step.surely_finite()
            if not bool(ok) and (
                not bool(finite_flag(dense, None, dense[0].device, exact=True))
                or not step.outputs_finite()
            ):
                _restore(live, saved)
                _fail(surgeon, _second_message(losses, "aux gradient"), changed=False)
                return None
            step.apply()
            surgeon._set_state_lists(fresh)
    except BaseException:
        _restore(live, saved)
        raise
    _finish(params, live, saved)
    surgeon.step_count += 1
    return None


def _as_buffer(g: Tensor, dtype: torch.dtype) -> Tensor:
    """``g`` as an EMA buffer of ``dtype`` (the tensor itself when it already is one)."""
    return g if g.dtype == dtype else g.to(dtype)


class _Run:
    """The passes of one lean Bloop step over the parameters ``index`` (all reached)."""

    def __init__(
        self,
        surgeon: Bloop,
        index: list[int],
        grads: list[Tensor],
        hyper: dict[str, Any],
        coef_blocks: list[int] | None,
        gram_blocks: str | None,
    ) -> None:
        self.surgeon = surgeon
        self.index = index
        self.grads = grads
        self.hyper = hyper
        self.coef_blocks = coef_blocks
        self.gram_blocks = gram_blocks
        self.prev: Tensor | None = None  # code order: the first Gram, [n_gram, 2, 2]
        self.emas: list[Tensor] = []

    def _step(
        self, formula: Any, lists: list[list[Tensor]], out: list[Tensor], *, norms: bool = True
    ) -> SurgeryStep:
        return SurgeryStep(
            formula,
            lists,
            [],
            hyper=self.hyper,
            out=out,
            coef_blocks=self.coef_blocks,
            gram_blocks=self.gram_blocks,
            foreach=self.surgeon.foreach,
            kernel=self.surgeon.foreach,
            norms=norms,
        )

    # paper order -------------------------------------------------------------------------
    def aux_first(self, losses: Sequence[Tensor]) -> bool:
        """``.grad`` holds ``g_aux``: project it (``.grad <- a``), ``e <- (1 - rho) e - rho a``."""
        s = self.surgeon
        assert s.emas is not None
        self.emas = [s.emas[0][i] for i in self.index]
        g, e = self.grads, self.emas
        project = self._step(_Projection(), [g, e], g)
        coefs = project.coefficients().direction  # [n_eff, 2]: lam, -lam beta
        norms = project.gram().diagonal(dim1=1, dim2=2).clamp(min=0).sqrt()
        norms = norms.index_select(0, torch.tensor(project.eff_gram, device=norms.device))
        bound_a = (coefs.abs() * norms).sum(-1)
        rho = _per_eff(project, "rho").to(norms.device)
        bound_e = (1 - rho) * norms[:, 1] + rho * bound_a
        if not _first_check(s, project, losses, "aux", extra_bound=bound_e):
            return False
        project.apply()
        self._step(_Blend(lambda r: 1 - r, lambda r: -r), [e, g], e, norms=False).apply()
        return True

    def finish_aux_first(self, direction: list[Tensor | None]) -> bool:
        """``.grad = g_main + a``: check it, then ``e <- e + rho .grad``."""
        d = [t for t in direction if t is not None]
        if not bool(finite_flag(d, None, d[0].device)) and not bool(
            finite_flag(d, None, d[0].device, exact=True)
        ):
            return _fail(
                self.surgeon, "Non-finite main loss or gradient (inf or NaN).", changed=True
            )
        self._step(
            _Blend(lambda r: torch.ones_like(r), lambda r: r),
            [self.emas, d],
            self.emas,
            norms=False,
        ).apply()
        return True

    # code order and first step -------------------------------------------------------------
    def main_first(self, losses: Sequence[Tensor]) -> bool:
        """Code order. ``.grad`` holds ``g_main``: check it, then ``e <- (1 - rho) e + rho
        g_main``."""
        s = self.surgeon
        assert s.emas is not None
        g = self.grads
        self.emas = [s.emas[0][i] for i in self.index]
        lerp = self._step(
            _Blend(lambda r: 1 - r, lambda r: r, dots=True), [self.emas, g], self.emas
        )
        self.prev = lerp.gram().flip(1).flip(2)  # [e, g] -> [g, e]
        if not _check_main(s, self.prev, losses, g):
            return False
        lerp.apply()
        return True

    def finish_main_first(self, direction: list[Tensor | None]) -> bool:
        """``.grad = g_main + lam g_aux``: ``.grad <- .grad - lam c e``, ``c`` from the new Gram
        minus ``<g_main, e>`` (from the first)."""
        d = [t for t in direction if t is not None]
        prev = self.prev
        assert prev is not None

        def offset_for(step: SurgeryStep) -> Callable[[Tensor], Tensor]:
            old = prev.index_select(0, torch.tensor(step.eff_gram, device=prev.device))

            def offset(rho: Tensor) -> Tensor:  # <g_main, (1 - rho) e + rho g_main>
                return (1 - rho) * old[:, 0, 1] + rho * old[:, 0, 0]

            return offset

        formula = _Projection(seeded=True)
        step = self._step(formula, [d, self.emas], d)
        formula.offset = offset_for(step)
        gram = step.gram()
        ok = torch.isfinite(gram[:, 0, 0]).all() & step.surely_finite()
        if not bool(ok) and not bool(finite_flag(d, None, d[0].device, exact=True)):
            return _fail(
                self.surgeon,
                "Non-finite direction (inf or NaN): the aux gradient is not finite, or a weight "
                "(lam) is too large for it (lean capture sums the gradients in .grad; "
                "capture='separate' tells them apart).",
                changed=True,
            )
        if not bool(ok) and not step.outputs_finite():
            return _fail(
                self.surgeon,
                "Non-finite direction (inf or NaN): a weight (lam) too large for these gradients.",
                changed=True,
            )
        step.apply()
        return True


def _per_eff(step: SurgeryStep, name: str) -> Tensor:
    """A hyperparameter per effective block of ``step`` (float64, first level)."""
    values = step.hyper[name]
    values = values.reshape(values.shape[0], -1)[:, 0]
    if values.shape[0] > 1:
        values = values[torch.tensor(step.eff_coef, device=values.device)]
    else:
        values = values.expand(len(step.eff_coef))
    return values.to(torch.float64)


def _check_main(
    surgeon: Surgeon, gram: Tensor, losses: Sequence[Tensor], grads: list[Tensor]
) -> bool:
    """Before anything changes (code order, first step): the loss values and ``||g_main||^2``
    (``gram[:, 0, 0]``); one host sync, a "no" confirmed exactly."""
    values = torch.stack([loss.detach().to(gram.device, torch.float64) for loss in losses])
    if bool(torch.isfinite(values).all() & torch.isfinite(gram[:, 0, 0]).all()):
        return True
    names = loss_names(len(losses) - 1)
    bad = [n for n, v in zip(names, values.tolist()) if v != v or abs(v) == float("inf")]
    if not bool(finite_flag(grads, None, gram.device, exact=True)):
        bad.append("main")
    if not bad:  # only the sum of squares overflowed
        return True
    bad = list(dict.fromkeys(bad))
    message = f"Non-finite {' and '.join(bad)} loss or gradient (inf or NaN); nothing was changed."
    return _fail(surgeon, message, changed=False)
