"""Argument checks with one message shape: name, value, rule, and the fix when it is known."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

ParamsT: TypeAlias = Iterable[Tensor] | Iterable[dict[str, Any]]
"""What a ``torch.optim`` optimizer takes: tensors, or parameter-group dicts with ``"params"``."""


class NonFiniteGradientError(RuntimeError):
    """A loss or a gradient holds inf or NaN (raised before anything is changed)."""


def check_lam(lam: object) -> float:
    """``lam`` must be a finite real number >= 0."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(
            f"Invalid lam={lam!r}: must be a real number (float), got {type(lam).__name__}"
        )
    value = float(lam)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid lam={lam!r}: must be finite and >= 0")
    return value


def check_lams(lam: object) -> tuple[float, ...]:
    """``lam``: one float (one auxiliary loss) or a non-empty sequence of K floats (K losses)."""
    if isinstance(lam, (str, bytes, Tensor)) or not isinstance(lam, Sequence):
        return (check_lam(lam),)
    if len(lam) == 0:
        raise ValueError(
            "Invalid lam=[]: give one weight per auxiliary loss (a float, or a list of floats)"
        )
    return tuple(check_lam(v) for v in lam)


def check_rhos(rho: object, n: int) -> tuple[float, ...]:
    """``rho``: one float for every EMA, or a sequence of exactly ``n`` floats (one per EMA)."""
    if isinstance(rho, (str, bytes, Tensor)) or not isinstance(rho, Sequence):
        return (check_rho(rho),) * n
    if len(rho) != n:
        raise ValueError(
            f"Invalid rho={list(rho)!r}: expected one value per EMA ({n}), or one float for all"
        )
    return tuple(check_rho(v) for v in rho)


def check_flag(name: str, value: object) -> bool:
    """A switch must be a bool (``1`` or ``"yes"`` are refused, as torch does for ``foreach``)."""
    if not isinstance(value, bool):
        raise TypeError(f"Invalid {name}={value!r}: must be a bool (True or False)")
    return value


def check_rho(rho: object) -> float:
    """``rho`` (weight of the new gradient in the EMA) must be in (0, 1]."""
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real):
        raise TypeError(
            f"Invalid rho={rho!r}: must be a real number (float), got {type(rho).__name__}"
        )
    value = float(rho)
    if not (0.0 < value <= 1.0):
        raise ValueError(
            f"Invalid rho={rho!r}: must be in (0, 1] (the weight of the new gradient; "
            "the paper's default is 0.01)"
        )
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Invalid {name}={value!r}: must be one of {valid}")
    return value


def collect_params(params: ParamsT) -> tuple[list[dict[str, Any]], list[Tensor]]:
    """Normalise ``params`` into parameter groups and one flat, duplicate-free list."""
    if isinstance(params, Tensor):
        raise TypeError(
            "Invalid params: a single Tensor was given; pass an iterable of tensors "
            "(e.g. model.parameters() or [tensor])"
        )
    items = list(params)
    if not items:
        raise ValueError("Invalid params=[]: the surgeon got an empty parameter list")
    raw_groups = items if isinstance(items[0], dict) else [{"params": items}]
    groups: list[dict[str, Any]] = []
    flat: list[Tensor] = []
    seen: set[int] = set()
    for g, group in enumerate(raw_groups):
        if not isinstance(group, dict):
            raise TypeError(
                f"Invalid params: group {g} is a {type(group).__name__}; mix no dicts and tensors"
            )
        if "params" not in group:
            raise ValueError(f"Invalid params: parameter group {g} has no 'params' key")
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in ps:
            if not isinstance(p, Tensor):
                raise TypeError(f"Invalid params: expected Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(
                    "Invalid params: a non-leaf tensor was given; surgeons write .grad of leaf tensors"
                )
            if p.is_complex():
                raise TypeError(
                    f"Invalid params: a {p.dtype} tensor was given; complex parameters are not "
                    "supported (view them as real with torch.view_as_real)"
                )
            if not p.is_floating_point():
                raise TypeError(
                    f"Invalid params: a {p.dtype} tensor was given; parameters must be floating point"
                )
            if id(p) in seen:
                raise ValueError(
                    "Invalid params: a parameter appears twice (in the same or in different groups); "
                    "pass each parameter once"
                )
            seen.add(id(p))
            flat.append(p)
        groups.append({**group, "params": ps})
    if not flat:
        raise ValueError("Invalid params: the parameter groups hold no tensors")
    return groups, flat


def check_loss(name: str, loss: object) -> Tensor:
    """A loss must be a real scalar tensor that requires grad (finiteness is checked later)."""
    if not isinstance(loss, Tensor):
        raise TypeError(f"Invalid {name}: expected a scalar Tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"Invalid {name}: expected a scalar loss, got shape {tuple(loss.shape)}; reduce it first "
            "(e.g. loss.mean())"
        )
    if not loss.requires_grad:
        raise ValueError(
            f"Invalid {name}: the loss does not require grad (was it computed under torch.no_grad(), "
            "or from parameters with requires_grad=False?)"
        )
    return loss


def check_grad_list(name: str, grads: object, params: Sequence[Tensor]) -> list[Tensor | None]:
    """A gradient list must align with the parameters: length, shape, dtype, device, dense."""
    if isinstance(grads, Tensor) or not isinstance(grads, Sequence):
        raise TypeError(
            f"Invalid {name}: expected a list of tensors (or None), got {type(grads).__name__}"
        )
    if len(grads) != len(params):
        raise ValueError(
            f"Invalid {name}: got {len(grads)} gradients for {len(params)} parameters; "
            "pass one entry per parameter (None for zero)"
        )
    out: list[Tensor | None] = []
    for i, (g, p) in enumerate(zip(grads, params)):
        if g is None:
            out.append(None)
            continue
        if not isinstance(g, Tensor):
            raise TypeError(
                f"Invalid {name}[{i}]: expected a Tensor or None, got {type(g).__name__}"
            )
        if g.is_sparse or g.layout != torch.strided:
            raise ValueError(
                f"Invalid {name}[{i}]: sparse gradients are not supported; use dense gradients"
            )
        if g.shape != p.shape:
            raise ValueError(
                f"Invalid {name}[{i}]: shape {tuple(g.shape)} does not match the parameter's {tuple(p.shape)}"
            )
        if g.dtype != p.dtype:
            raise ValueError(
                f"Invalid {name}[{i}]: dtype {g.dtype} does not match the parameter's {p.dtype}"
            )
        if g.device != p.device:
            raise ValueError(
                f"Invalid {name}[{i}]: device {g.device} does not match the parameter's {p.device}"
            )
        out.append(g)
    return out
