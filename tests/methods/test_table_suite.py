"""The surgeons' parametrised contract suite (``tests/surgeons/test_contract.py``) run on the
Table-1 methods that are not in ``torchbloop.methods.METHODS`` yet, through the entries of
``_table1_entries`` (the ones proposed for the table). Once an entry is in the table the suite
runs it itself and this module leaves it out.

The suite builds every surgeon with ``lam`` and calls ``combine`` without a loss value. For the
methods without ``lam`` (MetaBalance, the original Dynamic Barrier) the surgeon is built with
the entry's hyperparameters only, which is what the suite does after the change proposed with
these methods; the suite tests that cannot apply to a method are listed with the reason and
the test of this package that covers the same ground.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch
from _table1_entries import ENTRIES

from torchbloop.methods import METHODS

_PATH = Path(__file__).resolve().parents[1] / "surgeons" / "test_contract.py"
_SPEC = importlib.util.spec_from_file_location("_surgeon_contract_suite", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
suite = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(suite)

NEW = {info.name: info for info in ENTRIES if info.name not in METHODS}

NO_LAM = {"metabalance", "original_dynamic_barrier"}
"""Methods without a ``lam``."""
USES_COMBINE = {
    "test_parameter_reached_only_by_aux_gets_zero_main_gradient",
    "test_parameter_reached_by_neither_loss_is_left_alone",
    "test_combine_equals_backward_and_keeps_its_inputs",
    "test_all_zero_gradients_are_safe",
    "test_k_losses_combine_equals_backward",
}
NOT_HALVED = {"mgda", "metabalance", "original_dynamic_barrier"}
NOT_HALVED_WHY = (
    "no priority for the main loss: over the suite's 60 steps it goes down (0.88 to 0.48-0.52 "
    "with the defaults and lam = 0.05, measured) but not below half, the suite's bar; "
    "see test_main_loss_goes_down_without_priority"
)


def _reason(test: str, method: str) -> tuple[str, str] | None:
    """``("skip" | "xfail", why)`` when a suite test cannot hold for a method, else None."""
    if test == "test_state_round_trip_continues_bit_identically" and method in NO_LAM:
        return "skip", (
            "the suite checks surgeon.lam after loading; no lam here "
            "(covered by test_surgeons::test_state_round_trip_is_bit_exact)"
        )
    if test in USES_COMBINE and method == "original_dynamic_barrier":
        return "skip", (
            "the suite calls combine() without the main loss value the barrier needs "
            "(covered by test_surgeons::test_combine_equals_backward)"
        )
    if test == "test_main_loss_goes_down" and method in NOT_HALVED:
        return "xfail", NOT_HALVED_WHY
    return None


def _factory(name: str):
    info = NEW[name]

    def make(params, **kw):
        lam = kw.pop("lam", suite.LAM)
        if "lam" in info.hyperparameters:
            kw["lam"] = lam
        return info.factory(params, **kw)

    return make


@pytest.fixture
def table(monkeypatch):
    """The suite's table and factories, extended with the new entries."""
    monkeypatch.setattr(suite, "TABLE", {**suite.TABLE, **NEW})
    monkeypatch.setattr(suite, "FACTORIES", {**suite.FACTORIES, **{n: _factory(n) for n in NEW}})
    monkeypatch.setattr(suite, "_make", lambda method, params, **kw: _factory(method)(params, **kw))


def _cases(test: str, methods):
    out = []
    for method in methods:
        why = _reason(test, method)
        marks = []
        if why is not None:
            kind, text = why
            marks = (
                [pytest.mark.skip(reason=text)]
                if kind == "skip"
                else [pytest.mark.xfail(reason=text, strict=True)]
            )
        out.append(pytest.param(test, method, marks=marks, id=f"{test}-{method}"))
    return out


_SUITE_TESTS = [
    name
    for name, fn in vars(suite).items()
    if name.startswith("test_") and "method" in inspect.signature(fn).parameters
]
_MULTI = [n for n, info in NEW.items() if info.max_aux is None or info.max_aux >= 2]
CASES = [
    case
    for test in _SUITE_TESTS
    for case in _cases(test, _MULTI if test.startswith("test_k_losses") else list(NEW))
]
_OPTIMIZERS = {
    "SGD": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "Adam": lambda ps: torch.optim.Adam(ps, lr=0.02),
}


@pytest.mark.parametrize(("test", "method"), CASES)
def test_suite(table, test, method):
    fn = getattr(suite, test)
    if "make_opt" in inspect.signature(fn).parameters:
        for make_opt in _OPTIMIZERS.values():
            fn(method, make_opt)
    else:
        fn(method)


@pytest.mark.parametrize("method", sorted(NOT_HALVED & set(NEW)))
def test_main_loss_goes_down_without_priority(table, method):
    """What the methods without priority do guarantee on the suite's toy problem: the main loss
    goes down (every step's direction has ``<d, g_m> > 0`` to first order)."""
    model = suite.Toy()
    surgeon = suite.FACTORIES[method](model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    before = suite.full_main_loss(model)
    for step in range(60):
        opt.zero_grad()
        surgeon.backward(*suite.losses(model, *suite.batch(step)))
        opt.step()
    assert suite.full_main_loss(model) < before


def test_table_entries_take_what_they_say():
    """Single-aux entries refuse two aux weights; MGDA takes up to its ``max_aux``."""
    for info in NEW.values():
        if "lam" not in info.hyperparameters:
            continue
        model = suite.Toy()
        if info.max_aux == 1:
            with pytest.raises(ValueError, match="auxiliary loss"):
                info.factory(model.parameters(), lam=[0.1, 0.2])
        else:
            assert (
                info.factory(model.parameters(), lam=[0.1] * info.max_aux).num_aux == info.max_aux
            )
