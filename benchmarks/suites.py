"""The built-in suites: named lists of training runs and the data they read."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.protonet_runs import EvalSetting, ProtoNetRun
from benchmarks.results import directory_checksum
from fewshot.episodes import EpisodeSpec

Sources = dict  # {"train": source, "val": source or None, "test": source}


@dataclass(frozen=True)
class Suite:
    """Runs that share one dataset; ``load(data_root) -> (sources, dataset checksum)``."""

    name: str
    description: str
    runs: tuple[ProtoNetRun, ...]
    load: Callable[[Path | None], tuple[Sources, str | None]]
    needs_data_root: bool


def _load_digits(_: Path | None) -> tuple[Sources, str]:
    """scikit-learn's digits: meta-train on digits 0-4, test on the held-out digits 5-9."""
    from fewshot.datasets import load_digits_source

    digits = load_digits_source()
    checksum = "sha256:" + hashlib.sha256(digits.images.numpy().tobytes()).hexdigest()
    return {"train": digits.subset(range(5)), "val": None, "test": digits.subset(range(5, 10))}, checksum


def _load_omniglot(data_root: Path | None) -> tuple[Sources, str]:
    """The Vinyals split of Omniglot under ``<data_root>/omniglot``."""
    from fewshot.datasets import load_omniglot

    if data_root is None:
        raise ValueError("the omniglot suite needs --data-root (a folder holding omniglot/)")
    root = data_root / "omniglot"
    sources = {split: load_omniglot(root, split) for split in ("train", "val", "test")}
    files = [root / name for name in ("images_background.npz", "images_evaluation.npz", "characters.csv")]
    return sources, directory_checksum([f for f in files if f.is_file()])


QUICK = Suite(
    name="quick",
    description="ProtoNet on scikit-learn's bundled digits, 5-way episodes on held-out digits (no download, ~1 min)",
    runs=(
        ProtoNetRun(name="digits-protonet-5shot", benchmark="digits-heldout", dataset="sklearn-digits",
                    train_spec=EpisodeSpec(5, 5, 10), train_episodes=300, lr_step=100, val_spec=None,
                    validate_every=100,
                    tests=(EvalSetting(EpisodeSpec(5, 1, 15)), EvalSetting(EpisodeSpec(5, 5, 15)))),
    ),
    load=_load_digits,
    needs_data_root=False,
)

OMNIGLOT = Suite(
    name="omniglot",
    description="Snell et al. 2017 on Omniglot (Vinyals split): 60-way training, 5/20-way 1/5-shot tests",
    runs=(
        ProtoNetRun(name="omniglot-protonet-1shot", benchmark="omniglot", dataset="omniglot-vinyals",
                    train_spec=EpisodeSpec(60, 1, 5), train_episodes=6000, lr_step=2000,
                    val_spec=EpisodeSpec(20, 1, 15),
                    tests=(EvalSetting(EpisodeSpec(5, 1, 15)), EvalSetting(EpisodeSpec(20, 1, 15)))),
        ProtoNetRun(name="omniglot-protonet-5shot", benchmark="omniglot", dataset="omniglot-vinyals",
                    train_spec=EpisodeSpec(60, 5, 5), train_episodes=3600, lr_step=1200,
                    val_spec=EpisodeSpec(20, 5, 15),
                    tests=(EvalSetting(EpisodeSpec(5, 5, 15)), EvalSetting(EpisodeSpec(20, 5, 15)))),
    ),
    load=_load_omniglot,
    needs_data_root=True,
)

SUITES = {suite.name: suite for suite in (QUICK, OMNIGLOT)}
