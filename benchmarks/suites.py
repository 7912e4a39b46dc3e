"""The built-in suites: named lists of runs and where their data comes from."""

from __future__ import annotations

from pathlib import Path

from benchmarks.protonet_runs import ProtoNetRun, TestSetting
from benchmarks.results import directory_checksum
from fewshot.episodes import EpisodeSpec


def _omniglot_runs() -> list[ProtoNetRun]:
    """Snell et al. 2017 on the Vinyals split: 60-way training, shot matched to the test shot."""
    common = dict(benchmark="omniglot", dataset="omniglot-vinyals", validate_every=500)
    return [
        ProtoNetRun(name="omniglot-protonet-1shot", train_spec=EpisodeSpec(60, 1, 5), train_episodes=6000,
                    lr_step=2000, val_spec=EpisodeSpec(20, 1, 15),
                    tests=(TestSetting(EpisodeSpec(5, 1, 15)), TestSetting(EpisodeSpec(20, 1, 15))), **common),
        ProtoNetRun(name="omniglot-protonet-5shot", train_spec=EpisodeSpec(60, 5, 5), train_episodes=3600,
                    lr_step=1200, val_spec=EpisodeSpec(20, 5, 15),
                    tests=(TestSetting(EpisodeSpec(5, 5, 15)), TestSetting(EpisodeSpec(20, 5, 15))), **common),
    ]


def load_omniglot_sources(data_root: Path) -> tuple[dict, str]:
    from fewshot.datasets import load_omniglot

    root = data_root / "omniglot"
    sources = {split: load_omniglot(root, split) for split in ("train", "val", "test")}
    files = [root / "images_background.npz", root / "images_evaluation.npz", root / "characters.csv"]
    checksum = directory_checksum([f for f in files if f.is_file()]) if (root / "characters.csv").is_file() else None
    return sources, checksum
