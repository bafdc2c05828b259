"""Targets 1, 5 and 6 of issue 5: the combination step against the memory-traffic floor.

The combination step is what :class:`torchbloop.Bloop` does after the two backward passes: the
inner products ``<g_aux, e>`` and ``||e||^2``, the direction written into the aux buffer, and the
EMA update. The yardstick is ``torch._foreach_add_(g_aux, g_main)`` over the same tensors (read
two buffers, write one): the cheapest whole-gradient operation there is.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from _timing import measure
from torchbloop.compile import compiled_bloop_step
from torchbloop.functional import (
    bloop_direction,
    bloop_update_,
    cpu_kernel_available,
    ema_update_,
    pcgrad_direction,
    use_cpu_kernel,
)

LAM, RHO = 0.5, 0.01
COMPILED = "torch.compile (compiled_bloop_step, default)"
COMPILED_LOOPS = "torch.compile (Inductor's own loops, cpu_kernel=False)"
BYTES_BASE = 3  # buffers moved by foreach_add_: read main, read aux, write aux


@dataclass
class Row:
    """One timed path at one size."""

    section: str
    path: str
    params: int
    tensors: int
    seconds: float
    base_seconds: float
    buffers: float
    """Buffer-sized transfers counted for the GB/s figure (the path's minimum traffic)."""

    @property
    def ratio(self) -> float:
        return self.seconds / self.base_seconds

    @property
    def gbps(self) -> float:
        return self.buffers * self.params * 4 / self.seconds / 1e9


def _lists(
    params: int, tensors: int, seed: int = 0
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    g = torch.Generator().manual_seed(seed)
    sizes = [params // tensors] * tensors
    sizes[0] += params - sum(sizes)
    main = [torch.randn(s, generator=g) for s in sizes]
    aux = [torch.randn(s, generator=g) for s in sizes]
    ema = [torch.randn(s, generator=g) for s in sizes]
    return main, aux, ema


def _without_cpu_kernel(fn: Callable[[], object]) -> Callable[[], object]:
    """Run ``fn`` with the fused CPU kernel turned off (the torch-op paths)."""

    def run() -> object:
        previous = use_cpu_kernel(False)
        try:
            return fn()
        finally:
            use_cpu_kernel(previous)

    return run


def torch_paths(
    main: list[Tensor], aux: list[Tensor], ema: list[Tensor]
) -> dict[str, Callable[[], object]]:
    """The torch paths timed at every size (each leaves the direction in ``aux``)."""

    def two_calls() -> None:  # what Bloop._direction does: bloop_direction, then ema_update_
        bloop_direction(main, aux, ema, lam=LAM, out=aux)
        ema_update_(ema, main, rho=RHO)

    def fused() -> None:  # what Bloop does: the C kernel where it is available
        bloop_update_(main, aux, ema, lam=LAM, rho=RHO, out=aux)

    paths = {
        "foreach_add_ (floor yardstick)": lambda: torch._foreach_add_(aux, main),
        "bloop_direction + ema_update_ (eager)": two_calls,
        "bloop_update_ (torch ops, no C kernel)": _without_cpu_kernel(fused),
    }
    if cpu_kernel_available():
        paths["bloop_update_ (fused C kernel, default)"] = fused
    return paths


TRAFFIC = {
    "foreach_add_ (floor yardstick)": 3.0,
    "bloop_direction + ema_update_ (eager)": 7.0,
    "bloop_update_ (torch ops, no C kernel)": 7.0,
    "bloop_update_ (fused C kernel, default)": 7.0,
    "torch.compile (compiled_bloop_step, default)": 7.0,
    "torch.compile (Inductor's own loops, cpu_kernel=False)": 7.0,
    "JAX jit (authors' approach)": 8.0,
    "TorchJD PCGrad (flatten + aggregate)": 4.0,
    "torchbloop pcgrad_direction": 4.0,
}
"""Minimum DRAM traffic, in buffer-sized transfers, of each path (GB/s = count x 4 bytes x
params / time). Bloop in the paper's order (timed here): read ``g_aux`` and ``e`` for the inner
products, then read ``g_main``, ``g_aux``, ``e`` and write the direction and ``e``: 7. The JAX
step updates the EMA first (the authors' order): read ``e``, ``g_main``, ``g_aux``, write ``e``,
then read them again and write the direction: 8 (the issue's count). PCGrad: read both, write
one, +1 for the inner products' pass."""


def compiled_step(*, cpu_kernel: bool) -> Callable[..., object]:
    """The library's compiled step (:func:`torchbloop.compile.compiled_bloop_step`)."""
    step = compiled_bloop_step(cpu_kernel=cpu_kernel)

    def run(
        main: list[Tensor], aux: list[Tensor], ema: list[Tensor], lam: float, rho: float
    ) -> Tensor:
        return step(main, aux, ema, lam=lam, rho=rho, out=aux).coef

    return run


def jax_step() -> Callable[..., object] | None:
    """The authors' formulation in JAX: pytree maps, two vdots, fresh outputs; None without jax."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    @jax.jit
    def step(main, aux, ema, lam, rho):  # type: ignore[no-untyped-def]
        ema = jax.tree_util.tree_map(lambda e, g: (1 - rho) * e + rho * g, ema, main)
        cross = sum(
            jnp.vdot(a, e)
            for a, e in zip(jax.tree_util.tree_leaves(aux), jax.tree_util.tree_leaves(ema))
        )
        sq = sum(jnp.vdot(e, e) for e in jax.tree_util.tree_leaves(ema))
        coef = cross / sq
        direction = jax.tree_util.tree_map(lambda m, a, e: m + lam * (a - coef * e), main, aux, ema)
        return direction, ema

    return step


def run_alternatives(params: int, tensors: int, repeats: int, *, quick: bool) -> list[Row]:
    """Target 1 and 5: every path at one size, side by side."""
    main, aux, ema = _lists(params, tensors)
    fns = torch_paths(main, aux, ema)
    if not quick:
        for name, kernel in ((COMPILED, True), (COMPILED_LOOPS, False)):
            cstep = compiled_step(cpu_kernel=kernel)
            cstep(main, aux, ema, LAM, RHO)  # compile outside the timing
            fns[name] = functools.partial(cstep, main, aux, ema, LAM, RHO)
    jstep = jax_step()
    if jstep is not None:
        import jax

        jm = [jax.numpy.asarray(t.numpy()) for t in main]
        ja = [jax.numpy.asarray(t.numpy()) for t in aux]
        je = [jax.numpy.asarray(t.numpy()) for t in ema]
        jax.block_until_ready(jstep(jm, ja, je, LAM, RHO))
        fns["JAX jit (authors' approach)"] = lambda: jax.block_until_ready(
            jstep(jm, ja, je, LAM, RHO)
        )
    fns.update(pcgrad_paths(main, aux))
    times = measure(fns, repeats=repeats)
    base = times["foreach_add_ (floor yardstick)"]
    return [Row("alternatives", k, params, tensors, v, base, TRAFFIC[k]) for k, v in times.items()]


def pcgrad_paths(main: list[Tensor], aux: list[Tensor]) -> dict[str, Callable[[], object]]:
    """PCGrad on the same gradients: TorchJD's aggregator (optional) and torchbloop's."""
    fns: dict[str, Callable[[], object]] = {
        "torchbloop pcgrad_direction": lambda: pcgrad_direction(main, aux, lam=1.0, out=aux),
    }
    try:
        from torchjd.aggregation import PCGrad
    except ImportError:
        return fns
    aggregator = PCGrad()

    def torchjd_pcgrad() -> list[Tensor]:
        jac = torch.stack(
            [torch.cat([g.reshape(-1) for g in main]), torch.cat([g.reshape(-1) for g in aux])]
        )
        flat = aggregator(jac)
        return list(flat.split([g.numel() for g in main]))

    fns["TorchJD PCGrad (flatten + aggregate)"] = torchjd_pcgrad
    return fns


def run_small_tensors(params: int, repeats: int) -> list[Row]:
    """Target 1, second half: the same parameter count in 50 and in 500 tensors."""
    rows = []
    for tensors in (50, 500):
        main, aux, ema = _lists(params, tensors)
        times = measure(torch_paths(main, aux, ema), repeats=repeats)
        base = times["foreach_add_ (floor yardstick)"]
        rows += [
            Row("tensor count", k, params, tensors, v, base, TRAFFIC[k]) for k, v in times.items()
        ]
    return rows


def run_scaling(sizes: list[int], repeats: int) -> list[Row]:
    """Target 6: cost against the parameter count (50 tensors each)."""
    rows = []
    for params in sizes:
        main, aux, ema = _lists(params, 50)
        times = measure(torch_paths(main, aux, ema), repeats=repeats)
        base = times["foreach_add_ (floor yardstick)"]
        rows += [Row("scaling", k, params, 50, v, base, TRAFFIC[k]) for k, v in times.items()]
        del main, aux, ema
    return rows


def jax_threads_note() -> str:
    flags = os.environ.get("XLA_FLAGS", "")
    return f"XLA_FLAGS={flags!r}" if flags else "XLA default threading"
