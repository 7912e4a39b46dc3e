"""The built-in continual benchmarks: a source, how it is cut into a stream, its checksum and sizes.

A continual benchmark's loader returns :class:`ContinualBenchmarkData`, whose
``make_stream(key, device, split)`` builds the stream of one run unit: ``key`` (the unit's
``stream`` role key) draws the class order, permutations or angles; ``split`` is ``"test"`` (the
source's test set is every experience's evaluation set) or ``"val"`` (a fixed stratified 10 %
of the training set, :data:`HOLDOUT_FRACTION`, drawn with :data:`HOLDOUT_KEY`, is held out as
the evaluation set and the rest trains: for choosing hyperparameters without the test set; the
same hold-out for every seed). Sources are read once per process and kept as tensors.

(Streams and sources, which know nothing of benchmarks, live in :mod:`protobench.continual`.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protobench.benchmarks.registry import SplitSize, register_benchmark
from protobench.benchmarks.results import array_checksum, directory_checksum
from protobench.continual.experience import Stream
from protobench.fewshot.counter_rng import role_key

HOLDOUT_FRACTION = 0.1
HOLDOUT_KEY = role_key("holdout", 0)
FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class ContinualBenchmarkData:
    """What a continual benchmark's loader returns: its name, dataset, checksum and stream maker."""

    name: str
    dataset: str
    checksum: str | None
    input_shape: tuple[int, ...]
    make_stream: Callable[[int, str, str], Stream]  # (stream key, device, "test" | "val") -> Stream


def _stream_maker(name: str, load_split: Callable[[str], object],
                  cut: Callable[..., Stream]) -> Callable[[int, str, str], Stream]:
    """``make_stream`` for a source read by ``load_split("train" | "test")`` (once) and cut into a stream
    by ``cut(name, train, evaluation, seed=key, device=device)``."""
    from protobench.continual.sources import holdout

    @functools.cache
    def sources(split: str):
        train = load_split("train")
        if split == "val":
            return holdout(train, HOLDOUT_FRACTION, HOLDOUT_KEY)
        return train, load_split("test")

    def make_stream(key: int, device: str, split: str = "test") -> Stream:
        if split not in ("test", "val"):
            raise ValueError(f"split must be 'test' or 'val', got {split!r}")
        train, evaluation = sources(split)
        return cut(name, train, evaluation, seed=key, device=device)

    return make_stream


def _fashion_mnist(data_root: Path | None) -> tuple[Callable[[str], object], str]:
    from protobench.continual.sources import load_fashion_mnist

    root = Path(data_root) / "fashion-mnist"
    return functools.partial(load_fashion_mnist, root), directory_checksum([root / f for f in FMNIST_FILES])


def _cifar10(data_root: Path | None) -> tuple[Callable[[str], object], str]:
    from protobench.continual.sources import load_cifar10_folder

    root = Path(data_root) / "cifar10"
    files = sorted(p for p in root.rglob("*.jpg"))
    return functools.partial(load_cifar10_folder, root), directory_checksum(files)


def _split(n_experiences: int, scenario: str) -> Callable[..., Stream]:
    from protobench.continual.streams import class_incremental

    return functools.partial(class_incremental, n_experiences=n_experiences, scenario=scenario)


def _domain(kind: str, n_experiences: int) -> Callable[..., Stream]:
    from protobench.continual import streams

    return functools.partial(getattr(streams, kind), n_experiences=n_experiences)


FMNIST_SPLITS = {"train": SplitSize(10, 6000), "test": SplitSize(10, 1000)}
CIFAR10_SPLITS = {"train": SplitSize(10, 5000), "test": SplitSize(10, 1000)}


def _register(name: str, description: str, input_shape: tuple[int, ...], splits: dict, data_folder: str | None,
              dataset: str, source: Callable, cut: Callable[[], Callable[..., Stream]]) -> None:
    """Register benchmark ``name``: ``source(data_root) -> (load_split, checksum)``, ``cut()`` the stream builder."""

    def loader(data_root: Path | None) -> ContinualBenchmarkData:
        load_split, checksum = source(data_root)
        return ContinualBenchmarkData(name, dataset, checksum, input_shape, _stream_maker(name, load_split, cut()))

    loader.__doc__ = description
    register_benchmark(name, input_shape=input_shape, splits=splits, data_folder=data_folder,
                       kind="continual")(loader)


def _digits(data_root: Path | None) -> tuple[Callable[[str], object], str]:
    from protobench.continual.sources import load_digits_split
    from protobench.fewshot.datasets import load_digits_source

    return load_digits_split, array_checksum(load_digits_source().images.numpy())


_register("split-digits", "Split-digits: scikit-learn's digits, 5 experiences x 2 classes, class-incremental "
          "(embedded)", (1, 28, 28), {"train": SplitSize(10, 140), "test": SplitSize(10, 34)}, None,
          "sklearn-digits", _digits, lambda: _split(5, "class-incremental"))
_register("split-fmnist", "Split-FashionMNIST: 5 experiences x 2 classes, class-incremental (needs data)",
          (1, 28, 28), FMNIST_SPLITS, "fashion-mnist", "fashion-mnist", _fashion_mnist,
          lambda: _split(5, "class-incremental"))
_register("split-fmnist-til", "Split-FashionMNIST: 5 experiences x 2 classes, task-incremental (needs data)",
          (1, 28, 28), FMNIST_SPLITS, "fashion-mnist", "fashion-mnist", _fashion_mnist,
          lambda: _split(5, "task-incremental"))
_register("permuted-fmnist", "Permuted-FashionMNIST: 5 pixel permutations of all 10 classes, domain-incremental "
          "(needs data)", (1, 28, 28), FMNIST_SPLITS, "fashion-mnist", "fashion-mnist", _fashion_mnist,
          lambda: _domain("permuted", 5))
_register("rotated-fmnist", "Rotated-FashionMNIST: 5 rotations in [0, 180) degrees of all 10 classes, "
          "domain-incremental (needs data)", (1, 28, 28), FMNIST_SPLITS, "fashion-mnist", "fashion-mnist",
          _fashion_mnist, lambda: _domain("rotated", 5))
_register("split-cifar10", "Split-CIFAR-10: 5 experiences x 2 classes, class-incremental (needs data)",
          (3, 32, 32), CIFAR10_SPLITS, "cifar10", "cifar10-jpeg", _cifar10, lambda: _split(5, "class-incremental"))
_register("split-cifar10-til", "Split-CIFAR-10: 5 experiences x 2 classes, task-incremental (needs data)",
          (3, 32, 32), CIFAR10_SPLITS, "cifar10", "cifar10-jpeg", _cifar10, lambda: _split(5, "task-incremental"))
