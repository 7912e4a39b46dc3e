"""Meta-train / meta-val / meta-test class splits, from files or from a seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protobench.fewshot.counter_rng import check_seed


@dataclass(frozen=True)
class ClassSplit:
    """Disjoint lists of class names (or ids) for meta-training, validation and testing."""

    train: tuple
    val: tuple
    test: tuple

    def __post_init__(self) -> None:
        seen: dict = {}
        for part in ("train", "val", "test"):
            for name in getattr(self, part):
                if name in seen:
                    raise ValueError(f"class {name!r} is in both the {seen[name]} and {part} splits")
                seen[name] = part


def read_class_list(path: str | Path) -> list[str]:
    """One class name per non-empty line (for example the Vinyals Omniglot split files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def split_classes(classes, n_train: int, n_val: int, n_test: int, seed: int) -> ClassSplit:
    """A random split of ``classes`` into parts of the given sizes, from its own ``seed``."""
    classes = list(classes)
    if n_train + n_val + n_test > len(classes) or min(n_train, n_val, n_test) < 0:
        raise ValueError(
            f"cannot split {len(classes)} classes into {n_train} train, {n_val} val and {n_test} test"
        )
    order = np.random.Generator(np.random.Philox(key=check_seed(seed))).permutation(len(classes))
    picked = [classes[i] for i in order]
    return ClassSplit(
        tuple(picked[:n_train]),
        tuple(picked[n_train : n_train + n_val]),
        tuple(picked[n_train + n_val : n_train + n_val + n_test]),
    )
