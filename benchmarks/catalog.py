"""The built-in benchmarks: a dataset, its meta-train/val/test split, its checksum and split sizes.

(Data *sources*, which know nothing of benchmarks, live in :mod:`protobench.fewshot.datasets`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from protobench.benchmarks.registry import SplitSize, register_benchmark
from protobench.benchmarks.results import array_checksum, directory_checksum


class LazySources(Mapping):
    """Split name -> labelled source, each loaded the first time it is used (a run that only
    evaluates never loads the training classes)."""

    def __init__(self, loaders: dict[str, Callable[[], Any]]) -> None:
        self._loaders = loaders
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, split: str) -> Any:
        if split not in self._loaded:
            self._loaded[split] = self._loaders[split]()
        return self._loaded[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaders)

    def __len__(self) -> int:
        return len(self._loaders)


@dataclass(frozen=True)
class BenchmarkData:
    """Labelled sources for ``train``, ``val`` (or None) and ``test``, and what they are."""

    name: str
    dataset: str
    sources: dict
    checksum: str | None
    input_shape: tuple[int, ...]


@register_benchmark("digits-heldout", input_shape=(1, 28, 28),
                    splits={"train": SplitSize(5, 177), "test": SplitSize(5, 174)})
def digits_heldout(data_root: Path | None = None) -> BenchmarkData:
    """scikit-learn's bundled digits: meta-train on digits 0-4, test on held-out 5-9 (embedded)."""
    from protobench.fewshot.datasets import load_digits_source

    digits = load_digits_source()
    checksum = array_checksum(digits.images.numpy())
    sources = {"train": digits.subset(range(5)), "val": None, "test": digits.subset(range(5, 10))}
    return BenchmarkData("digits-heldout", "sklearn-digits", sources, checksum, (1, 28, 28))


@register_benchmark("omniglot", input_shape=(1, 28, 28), data_folder="omniglot",
                    splits={"train": SplitSize(4112, 20), "val": SplitSize(688, 20), "test": SplitSize(1692, 20),
                            "trainval": SplitSize(4800, 20)})
def omniglot(data_root: Path | None) -> BenchmarkData:
    """Omniglot, Vinyals split (4112/688/1692 classes with rotations), 28x28 (needs data)."""
    from protobench.fewshot.datasets import load_omniglot

    root = Path(data_root) / "omniglot"
    sources = LazySources({split: partial(load_omniglot, root, split) for split in ("train", "val", "test",
                                                                                   "trainval")})
    files = [root / name for name in ("images_background.npz", "images_evaluation.npz", "characters.csv")]
    checksum = directory_checksum([f for f in files if f.is_file()])
    return BenchmarkData("omniglot", "omniglot-vinyals", sources, checksum, (1, 28, 28))


@register_benchmark("omniglot-subset", input_shape=(1, 28, 28),
                    splits={"train": SplitSize(1288, 20), "val": SplitSize(324, 20), "test": SplitSize(440, 20),
                            "trainval": SplitSize(1612, 20)})
def omniglot_subset(data_root: Path | None = None) -> BenchmarkData:
    """Omniglot subset shipped in the package: 322/81/110 characters x 4 rotations, 28x28 binary (embedded)."""
    from protobench.fewshot.datasets import TensorSource, load_omniglot_subset
    from protobench.fewshot.datasets.omniglot_subset import SUBSET_FILE

    sources = LazySources({**{split: partial(load_omniglot_subset, split) for split in ("train", "val", "test")},
                           "trainval": lambda: TensorSource.concatenate([load_omniglot_subset("train"),
                                                                         load_omniglot_subset("val")])})
    return BenchmarkData("omniglot-subset", "omniglot-subset", sources, directory_checksum([SUBSET_FILE]), (1, 28, 28))


@register_benchmark("mini-imagenet", input_shape=(3, 84, 84), data_folder="mini-imagenet",
                    splits={"val": SplitSize(16, 600), "test": SplitSize(20, 600)})
def mini_imagenet(data_root: Path | None) -> BenchmarkData:
    """mini-ImageNet, Ravi split, val (16 classes) and test (20) only: no meta-training (needs data)."""
    from protobench.fewshot.datasets import load_mini_imagenet

    root = Path(data_root) / "mini-imagenet"
    sources = {"train": None, "val": load_mini_imagenet(root, "val"), "test": load_mini_imagenet(root, "test")}
    checksum = directory_checksum([root / "splits" / "ravi" / f"{split}.csv" for split in ("val", "test")])
    return BenchmarkData("mini-imagenet", "mini-imagenet-ravi", sources, checksum, (3, 84, 84))
