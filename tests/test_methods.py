"""The method table: one entry per method, each usable as declared."""

from __future__ import annotations

import pytest
import torch

import torchbloop
from torchbloop.methods import METHODS, MethodInfo, get_method


def test_table_lists_the_shipped_surgeons_in_order() -> None:
    assert list(METHODS) == [
        "bloop",
        "mixed",
        "pcgrad",
        "dynamic_barrier",
        "agem",
        "mgda",
        "cosine_gating",
        "gradvac",
        "metabalance",
        "original_dynamic_barrier",
    ]
    assert [m.factory for m in METHODS.values()] == [
        torchbloop.Bloop,
        torchbloop.Mixed,
        torchbloop.PCGrad,
        torchbloop.DynamicBarrier,
        torchbloop.AGEM,
        torchbloop.MGDA,
        torchbloop.CosineGating,
        torchbloop.GradVac,
        torchbloop.MetaBalance,
        torchbloop.OriginalDynamicBarrier,
    ]
    # the paper's four are the experiments' default methods
    assert [n for n, m in METHODS.items() if m.in_paper] == list(METHODS)[:4]
    with pytest.raises(TypeError):
        METHODS["x"] = METHODS["bloop"]  # type: ignore[index]  # read-only


@pytest.mark.parametrize("name", list(METHODS))
def test_entry_is_consistent_and_its_factory_takes_its_hyperparameters(name: str) -> None:
    info = get_method(name)
    assert isinstance(info, MethodInfo) and info.name == name
    assert name.isidentifier() and name == name.lower()
    assert info.label and info.description
    assert set(info.hyperparameters) <= {"lam", "rho"}  # what the sweeps set
    assert info.max_aux is None or info.max_aux >= 1
    values = {"lam": 0.5, "rho": 0.1}
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    surgeon = info.factory([w], **{h: values[h] for h in info.hyperparameters})
    surgeon.backward(main=(w**2).sum(), aux=w.sum())
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_labels_and_colours_are_distinct_and_valid() -> None:
    matplotlib_colors = pytest.importorskip("matplotlib.colors")
    labels = [m.label for m in METHODS.values()]
    colours = [matplotlib_colors.to_hex(m.colour) for m in METHODS.values()]
    assert len(set(labels)) == len(labels) and len(set(colours)) == len(colours)


def test_get_method_unknown_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="bloop, mixed, pcgrad, dynamic_barrier"):
        get_method("sgd")
    with pytest.raises(ValueError, match="Unknown method"):
        get_method(["bloop"])  # type: ignore[arg-type]
