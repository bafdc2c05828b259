"""The table of bad inputs, in one place.

Each row is ``(id, setup, exception type, message regex)``; ``setup()`` builds what the call
needs (usually a surgeon that has already taken one valid step, so that ``.grad`` and the state
exist) and returns the call. Every row also asserts that NOTHING changed: ``.grad`` of every
parameter, the surgeon's state (EMA), ``step_count``, ``skipped_steps`` and hyperparameters.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from torchbloop import Bloop, Mixed, NonFiniteGradientError
from torchbloop.methods import METHODS

CLASSES = {
    info.factory.__name__: info.factory
    for info in METHODS.values()
    if "lam" in info.hyperparameters and not getattr(info.factory, "needs_main_loss", False)
}
"""Every method of the table that the rows can build with ``lam=`` and drive without a main-loss
value, by the name its state dicts carry (its class name). MetaBalance (no ``lam``) and the
original barrier (needs the main loss) have their error rows in tests/methods/test_surgeons.py."""


@dataclass
class World:
    """What a row's call acts on: parameters and (possibly) a surgeon."""

    params: list[torch.Tensor]
    surgeon: Any = None
    call: Callable[[], object] | None = None
    surgeon_state: Any = None


_OTHER = torch.ones(2, requires_grad=True)
"""A tensor outside every surgeon: losses of it reach none of the surgeon's parameters."""


def _params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [
        nn.Parameter(torch.randn(3, 2, generator=gen)),
        nn.Parameter(torch.randn(2, generator=gen)),
    ]


def _losses(params):
    w, b = params
    x = torch.arange(6.0).reshape(2, 3) / 6
    main = ((x @ w + b) ** 2).mean()
    aux = 0.5 * (w.pow(2).sum() + b.pow(2).sum())
    return main, aux


def _primed(cls, **kw) -> World:
    """A surgeon after one valid step (``.grad`` and, for Bloop, the EMA exist)."""
    params = _params()
    surgeon = cls(params, lam=0.5, **kw)
    surgeon.backward(*_losses(params))
    return World(params, surgeon)


def _snapshot(world: World) -> dict[str, Any]:
    s = world.surgeon
    snap: dict[str, Any] = {
        "grads": [None if p.grad is None else p.grad.clone() for p in world.params]
    }
    snap["values"] = [p.detach().clone() for p in world.params]
    if s is not None:
        snap["step_count"], snap["skipped"] = s.step_count, s.skipped_steps
        snap["hp"] = s.hyperparameters()
        snap["pending"] = s.pending_micro_batches
        ema = getattr(s, "ema", None)
        snap["ema"] = None if ema is None else [e.clone() for e in ema]
    return snap


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------- rows


def construct(cls, params_fn=_params, **kw) -> Callable[[], World]:
    def setup():
        params = _params()
        world = World(params)
        world.call = lambda: cls(params_fn() if params_fn is not _params else params, **kw)
        return world

    return setup


def on_primed(cls, action, *, pending: bool = False, **kw) -> Callable[[], World]:
    def setup():
        world = _primed(cls, **kw)
        world.surgeon_state = world.surgeon.state_dict()
        if pending:  # one micro-batch accumulated, the final backward not yet called
            world.surgeon.backward(*_losses(world.params), accumulate=True)
        world.call = lambda: action(world)
        return world

    return setup


def _w_twice():
    p = _params()
    return [p[0], p[1], p[0]]


def _w_twice_across_groups():
    p = _params()
    return [{"params": [p[0]]}, {"params": [p[1], p[0]]}]


def _meta_like(p):
    return torch.zeros(p.shape, dtype=p.dtype, device="meta")


def _good(world, which):
    main, aux = _losses(world.params)
    return list(torch.autograd.grad(main if which == "main" else aux, world.params))


def _combine_with(replace: Callable[[list[torch.Tensor]], list]):
    def action(world):
        g_main, g_aux = _good(world, "main"), _good(world, "aux")
        return world.surgeon.combine(replace(g_main), g_aux)

    return action


def _load(mutate: Callable[[dict], dict]):
    def action(world):
        return world.surgeon.load_state_dict(mutate(world.surgeon.state_dict()))

    return action


def _with_hp(**hp):
    def mutate(sd):
        return {**sd, "hyperparameters": {**sd["hyperparameters"], **hp}}

    return mutate


def _from(other_cls):
    def action(world):
        donor = _primed(other_cls)
        return world.surgeon.load_state_dict(donor.surgeon.state_dict())

    return action


def _with_more_params(world):
    params = [*_params(), nn.Parameter(torch.zeros(4))]
    donor = type(world.surgeon)(params, lam=0.5)
    donor.backward(*_losses(params[:2]))
    return world.surgeon.load_state_dict(donor.state_dict())


def _bad_ema_shapes(sd):
    state = {
        i: {k: v.reshape(-1)[:1].clone() for k, v in s.items()} for i, s in sd["state"].items()
    }
    return {**sd, "state": state}


def _without(key):
    return lambda sd: {k: v for k, v in sd.items() if k != key}


def _backward(make_losses):
    return lambda world: world.surgeon.backward(*make_losses(world.params))


def _inf_main(params):
    main, aux = _losses(params)
    return main + torch.tensor(math.inf), aux  # finite gradients, infinite loss


def _nan_aux(params):
    main, aux = _losses(params)
    return main, aux * torch.tensor(math.nan)


def _nan_grad_main(params):
    main, aux = _losses(params)
    return main + 0 * (params[1].sum() * math.inf), aux


ROWS: list[tuple[str, Callable[[], World], type[Exception], str]] = []

BOUNDED_DIRECTION = {"MGDA"}
"""Methods whose direction stays finite for any finite lam: MGDA's min-norm point of g_main and
lam * g_aux is never longer than g_main."""

TAKES_GRANULARITY = {
    name for name, cls in CLASSES.items() if "granularity" in inspect.signature(cls).parameters
}
"""The methods with a ``granularity`` argument (the Table-1 methods that need global or
per-tensor blocks fix theirs)."""

for name, cls in CLASSES.items():
    ROWS += [
        (
            f"{name}-lam-negative",
            construct(cls, lam=-1.0),
            ValueError,
            r"Invalid lam=-1\.0: must be finite and >= 0",
        ),
        (f"{name}-lam-inf", construct(cls, lam=math.inf), ValueError, r"Invalid lam=inf"),
        (f"{name}-lam-nan", construct(cls, lam=math.nan), ValueError, r"Invalid lam=nan"),
        (
            f"{name}-lam-str",
            construct(cls, lam="0.1"),
            TypeError,
            r"Invalid lam='0\.1': must be a real number",
        ),
        (f"{name}-lam-bool", construct(cls, lam=True), TypeError, r"Invalid lam=True"),
        (f"{name}-lam-none", construct(cls, lam=None), TypeError, r"Invalid lam=None"),
        (
            f"{name}-nonfinite-unknown",
            construct(cls, lam=0.1, nonfinite="ignore"),
            ValueError,
            r"Invalid nonfinite='ignore': must be one of 'raise', 'skip'",
        ),
        (
            f"{name}-no-params",
            construct(cls, params_fn=list, lam=0.1),
            ValueError,
            r"Invalid params=\[\]",
        ),
        (
            f"{name}-no-params-in-groups",
            construct(cls, params_fn=lambda: [{"params": []}], lam=0.1),
            ValueError,
            r"hold no tensors",
        ),
        (
            f"{name}-duplicate",
            construct(cls, params_fn=_w_twice, lam=0.1),
            ValueError,
            r"appears twice",
        ),
        (
            f"{name}-duplicate-across-groups",
            construct(cls, params_fn=_w_twice_across_groups, lam=0.1),
            ValueError,
            r"appears twice",
        ),
        (
            f"{name}-single-tensor",
            construct(cls, params_fn=lambda: _params()[0], lam=0.1),
            TypeError,
            r"single Tensor",
        ),
        (
            f"{name}-non-leaf",
            construct(cls, params_fn=lambda: [_params()[0] * 2], lam=0.1),
            ValueError,
            r"non-leaf",
        ),
        (
            f"{name}-integer-param",
            construct(cls, params_fn=lambda: [torch.zeros(3, dtype=torch.long)], lam=0.1),
            TypeError,
            r"torch\.int64 .*floating point",
        ),
        (
            f"{name}-per-group-lam-negative",
            construct(cls, params_fn=lambda: [{"params": _params(), "lam": -0.1}], lam=0.1),
            ValueError,
            r"Invalid lam=-0\.1",
        ),
        (
            f"{name}-per-group-lam-too-many",
            construct(cls, params_fn=lambda: [{"params": _params(), "lam": [0.1, 0.2]}], lam=0.1),
            ValueError,
            r"(gives 2 value\(s\) for 1 auxiliary losses|takes at most 1)",
        ),
        (
            f"{name}-complex-param",
            construct(cls, params_fn=lambda: [torch.zeros(3, dtype=torch.complex64)], lam=0.1),
            TypeError,
            r"torch\.complex64 .*complex parameters are not supported",
        ),
        (
            f"{name}-foreach-int",
            construct(cls, lam=0.1, foreach=1),
            TypeError,
            r"Invalid foreach=1: must be a bool",
        ),
        (
            f"{name}-process-group-int",
            construct(cls, lam=0.1, process_group=5),
            ValueError,
            r"Invalid process_group=5: must be 'auto', a ProcessGroup or None",
        ),
        (
            f"{name}-process-group-str",
            construct(cls, lam=0.1, process_group="world"),
            ValueError,
            r"Invalid process_group='world'",
        ),
        (f"{name}-lam-empty", construct(cls, lam=[]), ValueError, r"Invalid lam=\[\]"),
        (
            f"{name}-lam-list-with-negative",
            construct(cls, lam=[0.1, -1.0] if cls.max_aux is None else [-1.0]),
            ValueError,
            r"Invalid lam=-1\.0",
        ),
        # losses
        (
            f"{name}-main-not-scalar",
            on_primed(cls, _backward(lambda ps: (ps[0].sum(0), _losses(ps)[1]))),
            ValueError,
            r"Invalid main: expected a scalar loss, got shape \(2,\)",
        ),
        (
            f"{name}-aux-not-tensor",
            on_primed(cls, _backward(lambda ps: (_losses(ps)[0], 1.0))),
            TypeError,
            r"Invalid aux: expected a scalar Tensor, got float",
        ),
        (
            f"{name}-main-no-grad",
            on_primed(cls, _backward(lambda ps: (torch.tensor(1.0), _losses(ps)[1]))),
            ValueError,
            r"Invalid main: the loss does not require grad",
        ),
        (
            f"{name}-main-inf",
            on_primed(cls, _backward(_inf_main)),
            NonFiniteGradientError,
            r"Non-finite main loss",
        ),
        (
            f"{name}-aux-nan",
            on_primed(cls, _backward(_nan_aux)),
            NonFiniteGradientError,
            r"Non-finite aux loss",
        ),
        (
            f"{name}-main-grad-nan",
            on_primed(cls, _backward(_nan_grad_main)),
            NonFiniteGradientError,
            r"Non-finite main",
        ),
        # combine
        (
            f"{name}-loss-of-another-tensor",
            on_primed(cls, _backward(lambda ps: (_OTHER.sum(), _losses(ps)[1]))),
            ValueError,
            r"Invalid main loss: it reaches none of the surgeon's 2 parameters",
        ),
        (
            f"{name}-no-loss-reaches",
            on_primed(cls, _backward(lambda ps: (_OTHER.sum(), _OTHER.pow(2).sum()))),
            ValueError,
            r"Invalid main and aux loss: it reaches none",
        ),
        (
            f"{name}-aux-list-too-long",
            on_primed(cls, _backward(lambda ps: (_losses(ps)[0], list(_losses(ps))))),
            ValueError,
            r"Invalid aux: got 2 auxiliary losses, the surgeon was built for 1",
        ),
        (
            f"{name}-combine-length",
            on_primed(cls, _combine_with(lambda g: g[:1])),
            ValueError,
            r"Invalid main_grads: got 1 gradients for 2 parameters",
        ),
        (
            f"{name}-combine-shape",
            on_primed(cls, _combine_with(lambda g: [g[0].t(), g[1]])),
            ValueError,
            r"Invalid main_grads\[0\]: shape \(2, 3\) does not match the parameter's \(3, 2\)",
        ),
        (
            f"{name}-combine-dtype",
            on_primed(cls, _combine_with(lambda g: [g[0].double(), g[1]])),
            ValueError,
            r"Invalid main_grads\[0\]: dtype torch\.float64",
        ),
        (
            f"{name}-combine-device",
            on_primed(cls, _combine_with(lambda g: [g[0], _meta_like(g[1])])),
            ValueError,
            r"Invalid main_grads\[1\]: device meta",
        ),
        (
            f"{name}-combine-sparse",
            on_primed(cls, _combine_with(lambda g: [g[0].to_sparse(), g[1]])),
            ValueError,
            r"Invalid main_grads\[0\]: sparse gradients are not supported",
        ),
        (
            f"{name}-combine-not-a-list",
            on_primed(cls, _combine_with(lambda g: g[0])),
            TypeError,
            r"Invalid main_grads: expected a list",
        ),
        (
            f"{name}-combine-pending",
            on_primed(cls, _combine_with(lambda g: g), pending=True),
            RuntimeError,
            r"pending",
        ),
        # state
        (
            f"{name}-state-dict-pending",
            on_primed(cls, lambda w: w.surgeon.state_dict(), pending=True),
            RuntimeError,
            r"state_dict\(\) called while micro-batches are pending",
        ),
        (
            f"{name}-load-more-params",
            on_primed(cls, _with_more_params),
            ValueError,
            r"parameter groups of sizes \[3\] do not fit this surgeon's \[2\]",
        ),
        (
            f"{name}-load-lam-negative",
            on_primed(cls, _load(_with_hp(lam=-2.0))),
            ValueError,
            r"Invalid lam=-2\.0",
        ),
        (
            f"{name}-load-missing-state",
            on_primed(cls, _load(_without("state"))),
            ValueError,
            r"missing keys \['state'\]",
        ),
        (
            f"{name}-load-missing-hp",
            on_primed(cls, _load(_without("hyperparameters"))),
            ValueError,
            r"missing keys \['hyperparameters'\]",
        ),
        (
            f"{name}-load-bad-step-after-good-hyperparameters",
            on_primed(cls, _load(lambda sd: {**_with_hp(lam=0.25)(sd), "step": -1})),
            ValueError,
            r"Invalid state_dict: step=-1 must be an int >= 0",
        ),
        (
            f"{name}-load-step-not-int",
            on_primed(cls, _load(lambda sd: {**_with_hp(lam=0.25)(sd), "step": "3"})),
            ValueError,
            r"Invalid state_dict: step='3'",
        ),
        (
            f"{name}-load-pending",
            on_primed(cls, lambda w: w.surgeon.load_state_dict(w.surgeon_state), pending=True),
            RuntimeError,
            r"load_state_dict\(\) called while micro-batches are pending",
        ),
        (
            f"{name}-load-not-a-dict",
            on_primed(cls, lambda w: w.surgeon.load_state_dict([1])),
            TypeError,
            r"expected a dict",
        ),
    ]
    ROWS.append(
        (
            f"{name}-load-hp-without-lam",
            on_primed(cls, _load(lambda sd: {**sd, "hyperparameters": {}})),
            ValueError,
            r"Invalid state_dict: hyperparameters \{\} lack \[.*'lam'.*\]",
        )
    )
    other = Mixed if cls is not Mixed else Bloop
    ROWS.append(
        (
            f"{name}-load-from-{other.__name__}",
            on_primed(cls, _from(other)),
            ValueError,
            rf"saved by {other.__name__}, not {name}",
        )
    )

ROWS += [
    (
        "Bloop-rho-zero",
        construct(Bloop, lam=0.1, rho=0.0),
        ValueError,
        r"Invalid rho=0\.0: must be in \(0, 1\]",
    ),
    ("Bloop-rho-negative", construct(Bloop, lam=0.1, rho=-0.1), ValueError, r"Invalid rho=-0\.1"),
    ("Bloop-rho-above-one", construct(Bloop, lam=0.1, rho=1.5), ValueError, r"Invalid rho=1\.5"),
    ("Bloop-rho-nan", construct(Bloop, lam=0.1, rho=math.nan), ValueError, r"Invalid rho=nan"),
    ("Bloop-rho-str", construct(Bloop, lam=0.1, rho="0.1"), TypeError, r"Invalid rho='0\.1'"),
    (
        "Bloop-rho-wrong-length",
        construct(Bloop, lam=[0.1, 0.2], rho=[0.1]),
        ValueError,
        r"Invalid rho=\[0\.1\]: expected one value per EMA \(2\)",
    ),
    (
        "Bloop-diagnostics-int",
        construct(Bloop, lam=0.1, diagnostics=1),
        TypeError,
        r"Invalid diagnostics=1: must be a bool",
    ),
    (
        "Bloop-ema-order-unknown",
        construct(Bloop, lam=0.1, ema_order="both"),
        ValueError,
        r"Invalid ema_order='both': must be one of 'paper', 'code'",
    ),
    (
        "Bloop-per-group-rho-invalid",
        construct(Bloop, params_fn=lambda: [{"params": _params(), "rho": 1.5}], lam=0.1),
        ValueError,
        r"Invalid rho=1\.5",
    ),
    (
        "Bloop-per-group-rho-code-order-global",
        construct(
            Bloop,
            params_fn=lambda: [{"params": _params()[:1], "rho": 0.1}, {"params": _params()[1:]}],
            lam=0.1,
            ema_order="code",
        ),
        ValueError,
        r"per-group rho with ema_order='code' needs granularity='group'",
    ),
    (
        "Mixed-per-group-rho",
        construct(Mixed, params_fn=lambda: [{"params": _params(), "rho": 0.1}], lam=0.1),
        ValueError,
        r"Invalid parameter group 0: Mixed has no 'rho'",
    ),
    (
        "Bloop-load-ema-shapes",
        on_primed(Bloop, _load(_bad_ema_shapes)),
        ValueError,
        r"main_grad_ema of parameter 0 has shape \(1,\), the parameter \(3, 2\)",
    ),
    ("Bloop-load-rho", on_primed(Bloop, _load(_with_hp(rho=2.0))), ValueError, r"Invalid rho=2\.0"),
    (
        "Bloop-load-hp-without-rho",
        on_primed(
            Bloop,
            _load(lambda sd: {**sd, "hyperparameters": {"lam": 0.5, "ema_order": "paper"}}),
        ),
        ValueError,
        r"lack \['rho'\]",
    ),
    (
        "Bloop-load-ema-order",
        on_primed(Bloop, _load(_with_hp(ema_order="later"))),
        ValueError,
        r"Invalid ema_order='later'",
    ),
    (
        "Bloop-load-state-for-one-param",
        on_primed(Bloop, _load(lambda sd: {**sd, "state": {0: sd["state"][0]}})),
        ValueError,
        r"do not fit 2 parameters",
    ),
]


for name, cls in CLASSES.items():
    if name in TAKES_GRANULARITY:
        ROWS += [
            (
                f"{name}-granularity-unknown",
                construct(cls, lam=0.1, granularity="layer"),
                ValueError,
                r"Invalid granularity='layer': must be one of 'global', 'group', 'tensor'",
            ),
        ]


@pytest.mark.parametrize(("setup", "exc", "match"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_rejected_and_changes_nothing(setup, exc, match):
    world = setup()
    before = _snapshot(world)
    with pytest.raises(exc, match=match):
        world.call()
    after = _snapshot(world)
    assert _same(before, after), "the failed call changed something"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_sparse_gradient_in_backward(name):
    emb = nn.Embedding(10, 3, sparse=True)
    lin = nn.Linear(3, 1)
    params = [emb.weight, *lin.parameters()]
    surgeon = CLASSES[name](params, lam=0.1)
    world = World(params, surgeon)
    before = _snapshot(world)
    out = lin(emb(torch.tensor([1, 2, 3]))).mean()
    with pytest.raises(
        ValueError, match=r"Invalid main gradient\[0\]: sparse gradients are not supported"
    ):
        surgeon.backward(out, out * out)
    assert _same(before, _snapshot(world))
    assert surgeon.step_count == 0


@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize(
    "bad", [_inf_main, _nan_aux, _nan_grad_main], ids=["inf-main", "nan-aux", "nan-grad"]
)
def test_nonfinite_skip_skips_the_step(name, bad):
    world = _primed(CLASSES[name], nonfinite="skip")
    before = _snapshot(world)
    world.surgeon.backward(*bad(world.params))
    after = _snapshot(world)
    assert after["skipped"] == before["skipped"] + 1
    assert after["step_count"] == before["step_count"]
    assert _same(after["grads"], before["grads"]) and _same(after["ema"], before["ema"])
    world.surgeon.backward(*_losses(world.params))  # and the next good step proceeds
    assert world.surgeon.step_count == before["step_count"] + 1
    assert world.surgeon.state_dict()["skipped_steps"] == 1


def test_non_finite_error_names_the_loss():
    world = _primed(Bloop)
    with pytest.raises(NonFiniteGradientError, match=r"^Non-finite aux loss or gradient") as info:
        world.surgeon.backward(*_nan_aux(world.params))
    assert "main" not in str(info.value).split("loss")[0]
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_non_finite_direction_is_caught_like_a_non_finite_gradient(name, nonfinite):
    """Issue 11: lam = 1e308 with finite gradients used to write inf into .grad."""
    params = _params()
    surgeon = CLASSES[name](params, lam=1e308, nonfinite=nonfinite)
    world = World(params, surgeon)
    if name in BOUNDED_DIRECTION:  # a finite direction: written, and finite
        surgeon.backward(*_losses(params))
        assert surgeon.step_count == 1 and surgeon.skipped_steps == 0
        assert all(torch.isfinite(p.grad).all() for p in params)
        return
    before = _snapshot(world)
    if nonfinite == "raise":
        with pytest.raises(NonFiniteGradientError, match=r"^Non-finite direction"):
            surgeon.backward(*_losses(params))
        after = _snapshot(world)
    else:
        surgeon.backward(*_losses(params))
        after = _snapshot(world)
        assert after["skipped"] == 1
        after["skipped"] = before["skipped"]
    assert _same(before, after), "the failed step changed something"
    assert surgeon.step_count == 0 and all(p.grad is None for p in params)
    surgeon.lam = 0.5  # and a sensible lam proceeds
    surgeon.backward(*_losses(params))
    assert surgeon.step_count == 1 and all(torch.isfinite(p.grad).all() for p in params)
