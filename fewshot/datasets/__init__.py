"""Labelled sources: ``labels`` (int64 array) and ``__getitem__(i) -> (x, y)``."""

from fewshot.datasets.digits import load_digits_source
from fewshot.datasets.image_folder import ImageFolderSource
from fewshot.datasets.omniglot import load_omniglot
from fewshot.datasets.tensor import TensorSource

__all__ = ["ImageFolderSource", "TensorSource", "load_digits_source", "load_omniglot"]
