"""Where data is looked for, and what the missing-data error says."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchbloop.experiments.data import DATASETS, DataNotFoundError, data_root, dataset_dir
from torchbloop.experiments.data._cache import require_files


def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert data_root() == Path("~/.cache/torchbloop").expanduser().absolute()
    monkeypatch.setenv("TORCHBLOOP_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize("name", list(DATASETS))
def test_dataset_dir_precedence(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = DATASETS[name].folder
    monkeypatch.setenv("TORCHBLOOP_DATA", str(tmp_path / "env_root"))
    assert dataset_dir(name) == tmp_path / "env_root" / folder
    monkeypatch.setenv(DATASETS[name].env, str(tmp_path / "own_copy"))
    assert dataset_dir(name) == tmp_path / "own_copy"
    # An explicit root beats both variables.
    assert dataset_dir(name, tmp_path / "arg") == tmp_path / "arg" / folder


def test_unknown_dataset_rejected() -> None:
    with pytest.raises(ValueError, match=r"Invalid dataset name='cifar10'"):
        dataset_dir("cifar10")


def test_missing_data_error_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        require_files("austen", ["Rdata.rdb"], tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "austen" / "Rdata.rdb") in message
    for hint in (
        "make data",
        "python -m torchbloop.experiments.data fetch austen",
        "TORCHBLOOP_AUSTEN=",
        "root=",
    ):
        assert hint in message
