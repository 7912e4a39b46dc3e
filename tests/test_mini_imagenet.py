"""load_mini_imagenet on a tiny Ravi layout written here (with its error cases), and on the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_data_root
from PIL import Image

from protobench.benchmarks.registry import get_benchmark
from protobench.fewshot import EpisodeSampler, EpisodeSpec
from protobench.fewshot.datasets import load_mini_imagenet

# wnid -> colour of its images; the CSV lists n02 first, labels must follow sorted wnids
COLOURS = {"n02000000": (200, 30, 30), "n01000000": (20, 40, 220)}
PER_CLASS = 3


def _write_csv(path: Path, rows: list[tuple[str, str]], header: str = "filename,label") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + [f"{filename},{wnid}" for filename, wnid in rows]) + "\n")


@pytest.fixture
def root(tmp_path) -> Path:
    """val: two classes of three 84x84 JPEGs; test: one class; train: listed but no images."""
    (tmp_path / "images").mkdir()
    splits = {"val": list(COLOURS), "test": ["n03000000"], "train": ["n04000000"]}
    for split, wnids in splits.items():
        rows = [(f"{wnid}{i:08d}.jpg", wnid) for wnid in wnids for i in range(PER_CLASS)]
        _write_csv(tmp_path / "splits" / "ravi" / f"{split}.csv", rows)
        if split != "train":
            for filename, wnid in rows:
                Image.new("RGB", (84, 84), COLOURS.get(wnid, (90, 90, 90))).save(tmp_path / "images" / filename)
    return tmp_path


def test_labels_follow_sorted_wnids_and_images_decode(root):
    source = load_mini_imagenet(root, "val")
    assert len(source) == 2 * PER_CLASS
    assert source.class_names == ["n01000000", "n02000000"]
    np.testing.assert_array_equal(source.labels, [1, 1, 1, 0, 0, 0])
    assert source.labels.dtype == np.int64
    image, label = source[0]
    assert label == 1 and image.shape == (3, 84, 84) and image.dtype == torch.float32
    expected = torch.tensor(COLOURS["n02000000"], dtype=torch.float32).view(3, 1, 1) / 255
    assert (image - expected).abs().max() < 0.05  # JPEG is lossy
    episode = EpisodeSampler(source, EpisodeSpec(2, 1, 2), seed=0, n_episodes=1)[0]
    assert sorted(source.labels[episode.indices].tolist()) == [0, 0, 0, 1, 1, 1]


def test_transform_and_larger_images(root):
    Image.new("RGB", (168, 100), (10, 200, 10)).save(root / "images" / "n0300000000000001.jpg")
    source = load_mini_imagenet(root, "test")
    assert source[1][0].shape == (3, 84, 84)
    sizes = load_mini_imagenet(root, "test", transform=lambda image: torch.tensor(image.size))
    assert sizes[1][0].tolist() == [168, 100] and sizes[0][0].tolist() == [84, 84]


def test_missing_train_images_name_the_split(root):
    with pytest.raises(ValueError, match=r"the train split's images are missing: none of the 3 images listed in "
                                         r"train\.csv"):
        load_mini_imagenet(root, "train")


def test_missing_image_is_named_with_its_class(root):
    (root / "images" / "n0100000000000002.jpg").unlink()
    with pytest.raises(ValueError, match=r"n01000000 has 2 of its 3 listed images, missing n0100000000000002\.jpg"):
        load_mini_imagenet(root, "val")


def test_missing_csv(root):
    (root / "splits" / "ravi" / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.csv not found: mini-ImageNet needs the Ravi split CSVs"):
        load_mini_imagenet(root, "test")


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([("a.jpg", "n01"), ("b.jpg,n01", "extra")], "filename,label", r"line 3: expected 'filename,label'"),
        ([("a.jpg", "")], "filename,label", r"line 2: expected 'filename,label'"),
        ([("a.jpg", "n01")], "file,wnid", r"the first line must be the header 'filename,label'"),
        ([("a.jpg", "n01"), ("a.jpg", "n01")], "filename,label", r"line 3: a\.jpg is already listed on line 2"),
        ([], "filename,label", r"lists no images"),
    ],
)
def test_malformed_csv(root, rows, header, message):
    _write_csv(root / "splits" / "ravi" / "val.csv", rows, header)
    with pytest.raises(ValueError, match=message):
        load_mini_imagenet(root, "val")


def test_corrupt_image_is_named_when_read(root):
    (root / "images" / "n0300000000000002.jpg").write_bytes(b"not a jpeg")
    source = load_mini_imagenet(root, "test")
    with pytest.raises(ValueError, match=r"n0300000000000002\.jpg: cannot decode image"):
        source[2]


def test_unknown_split(root):
    with pytest.raises(ValueError, match="split must be one of"):
        load_mini_imagenet(root, "trainval")


def test_real_val_and_test_splits():
    root = real_data_root("mini-imagenet") / "mini-imagenet"
    for split, n_classes in (("val", 16), ("test", 20)):
        source = load_mini_imagenet(root, split)
        assert len(source.class_names) == n_classes
        np.testing.assert_array_equal(np.bincount(source.labels), np.full(n_classes, 600))
    image, label = source[len(source) - 1]
    assert image.shape == (3, 84, 84) and label == 19 and 0.0 <= image.min() < image.max() <= 1.0
    with pytest.raises(ValueError, match="the train split's images are missing"):
        load_mini_imagenet(root, "train")


def test_real_benchmark_matches_its_registration():
    data_root = real_data_root("mini-imagenet")
    benchmark = get_benchmark("mini-imagenet")
    assert "train" not in benchmark.splits and benchmark.input_shape == (3, 84, 84)
    with pytest.raises(ValueError, match="needs --data-root"):
        benchmark.load(None)
    data = benchmark.load(data_root)
    assert data.sources["train"] is None and data.checksum.startswith("sha256:")
    for split, size in benchmark.splits.items():
        counts = np.bincount(data.sources[split].labels)
        assert (len(counts), counts.min()) == (size.n_classes, size.min_class_size)
