"""Checks on the real cached data; skipped where it has not been fetched (`make data`)."""

from __future__ import annotations

import pytest
import torch

from torchbloop.experiments.data import (
    is_fetched,
    load_austen,
    load_bible_parallel,
    load_fashion_mnist,
    load_mnist5k,
    load_shakespeare,
)


def _needs(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not is_fetched(name), reason=f"{name} not fetched (make data)")


@_needs("fashion_mnist")
def test_real_fashion_mnist() -> None:
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = load_fashion_mnist(split)  # type: ignore[arg-type]
        assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        assert torch.bincount(y).tolist() == [n // 10] * 10
        assert 60 < x.float().mean().item() < 90 and x.max().item() == 255


@_needs("mnist5k")
def test_real_mnist5k() -> None:
    x, y = load_mnist5k()
    assert x.shape == (5000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [500] * 10
    assert bool((y.diff() >= 0).all())  # stored sorted by class
    assert x.max().item() == 255 and x[:, 0, 0].max().item() == 0


@_needs("austen")
def test_real_austen() -> None:
    books = load_austen()
    assert list(books) == [
        "Sense & Sensibility",
        "Pride & Prejudice",
        "Mansfield Park",
        "Emma",
        "Northanger Abbey",
        "Persuasion",
    ]
    lines_chars = sum(len(t) - t.count("\n") for t in books.values())
    assert 3_900_000 < lines_chars < 4_000_000  # 3,951,606
    assert books["Emma"].startswith("EMMA\n\nBy Jane Austen")
    assert "It is a truth universally acknowledged" in books["Pride & Prejudice"]


@_needs("shakespeare")
def test_real_shakespeare() -> None:
    works = load_shakespeare()
    assert len(works) == 42
    assert "To be, or not to be" in works["hamlet"]
    assert 4_500_000 < sum(map(len, works.values())) < 5_500_000


@_needs("bible")
def test_real_bible() -> None:
    everything = load_bible_parallel(drop_misaligned=False)
    verses = load_bible_parallel()
    assert len(everything) == 31084  # of the KJV canon's 31102; 18 are empty in the RV 1909
    assert len(verses) == 30516
    assert verses[0].en == "In the beginning God created the heaven and the earth."
    assert verses[0].es == "EN el principio crió Dios los cielos y la tierra."
    assert verses[-1][:3] == ("Rev", 22, 21)
    assert len({v.book for v in verses}) == 66
    assert not any("<" in v.en or "<" in v.es for v in verses)
    john = next(v for v in verses if v[:3] == ("John", 3, 16))
    assert john.en.startswith("¶ For God so loved the world") and "Dios" in john.es
