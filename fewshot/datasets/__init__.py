"""Labelled sources: ``labels`` (int64 array) and ``__getitem__(i) -> (x, y)``."""

from protobench.fewshot.datasets.digits import load_digits_source
from protobench.fewshot.datasets.image_folder import ImageFolderSource
from protobench.fewshot.datasets.mini_imagenet import MiniImageNetSource, load_mini_imagenet
from protobench.fewshot.datasets.omniglot import load_omniglot
from protobench.fewshot.datasets.omniglot_subset import load_omniglot_subset
from protobench.fewshot.datasets.tensor import TensorSource

__all__ = [
    "ImageFolderSource",
    "MiniImageNetSource",
    "TensorSource",
    "load_digits_source",
    "load_mini_imagenet",
    "load_omniglot",
    "load_omniglot_subset",
]
