"""What the fuzz tests act on: every surgeon, a few parameters, and a deep snapshot of its state."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchbloop import Bloop, DynamicBarrier, Mixed, PCGrad

FACTORIES: dict[str, Callable[[list[torch.Tensor]], Any]] = {
    "bloop_paper": lambda ps: Bloop(ps, lam=0.5, rho=0.3, ema_order="paper"),
    "bloop_code": lambda ps: Bloop(ps, lam=0.5, rho=0.3, ema_order="code"),
    "mixed": lambda ps: Mixed(ps, lam=0.5),
    "pcgrad": lambda ps: PCGrad(ps, lam=0.5),
    "dynamic_barrier": lambda ps: DynamicBarrier(ps, lam=0.5),
}
NAMES = tuple(FACTORIES)


def make_params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [
        nn.Parameter(torch.randn(3, 2, generator=gen, dtype=torch.float64)),
        nn.Parameter(torch.randn(2, generator=gen, dtype=torch.float64)),
    ]


def take_step(surgeon: Any, params: list[torch.Tensor], seed: int = 0) -> None:
    """One ``backward`` with losses that reach every parameter."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, generator=gen, dtype=torch.float64)
    main = (params[0].sum(0) * x).sum().sin() + params[1].dot(x)
    aux = sum(p.pow(2).sum() for p in params) / 2 + params[1].prod()
    surgeon.backward(main=main, aux=aux)


def make_surgeon(name: str, steps: int) -> tuple[Any, list[torch.Tensor]]:
    params = make_params()
    surgeon = FACTORIES[name](params)
    for k in range(steps):
        take_step(surgeon, params, seed=k)
    return surgeon, params


@functools.cache
def _prepared(name: str) -> tuple[Any, list[torch.Tensor]]:
    return make_surgeon(name, steps=1)


def prepared(name: str) -> tuple[Any, list[torch.Tensor]]:
    """A private copy of a surgeon after one step (state and ``.grad`` exist), and its parameters."""
    original = _prepared(name)
    surgeon, params = copy.deepcopy(original)
    for p, q in zip(params, original[1]):
        p.grad = None if q.grad is None else q.grad.clone()  # deepcopy leaves .grad behind
    assert all(p is q for p, q in zip(surgeon.params, params))
    return surgeon, params


def _frozen(value: Any) -> Any:
    """A comparable copy of a nested structure (tensors keep dtype, shape, values, grad_fn)."""
    if isinstance(value, torch.Tensor):
        return (
            "tensor",
            value.dtype,
            tuple(value.shape),
            value.device,
            value.requires_grad,
            value.grad_fn is not None,
            value.detach().clone(),
        )
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_frozen(v) for v in value)
    return copy.deepcopy(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and a and a[0] == "tensor":
        if not (isinstance(b, tuple) and b and b[0] == "tensor" and a[:-1] == b[:-1]):
            return False
        return bool(
            torch.equal(a[-1], b[-1])
            or torch.allclose(a[-1], b[-1], rtol=0, atol=0, equal_nan=True)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b) and type(a) is type(b)


def snapshot(surgeon: Any, params: list[torch.Tensor]) -> Any:
    """Everything a failed call must leave as it was.

    The state dict (state tensors, step counts, hyperparameters), the hyperparameters read
    through the attributes, the identity of the state tensors (a failed load must not swap
    them), and ``.grad`` of every parameter.
    """
    state = getattr(surgeon, "ema", None)
    return _frozen(
        {
            "state_dict": surgeon.state_dict(),
            "attributes": {
                key: getattr(surgeon, key)
                for key in ("lam", "rho", "ema_order", "step_count", "skipped_steps", "nonfinite")
                if hasattr(surgeon, key)
            },
            "state_ids": None if state is None else [id(t) for t in state],
            "grads": [p.grad for p in params],
        }
    )


def unchanged(before: Any, surgeon: Any, params: list[torch.Tensor]) -> bool:
    return _same(before, snapshot(surgeon, params))
