"""Every bad input gets a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.fewshot import ClassSplit, EpisodeSampler, EpisodeSpec, VariableEpisodeSpec, split_classes
from protobench.fewshot.datasets import ImageFolderSource, TensorSource

SPEC = EpisodeSpec(n_way=5, n_shot=1, n_query=2)


def labels_with(counts) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


# ---------------------------------------------------------------- sampler inputs


def test_more_ways_than_classes():
    with pytest.raises(ValueError, match=r"5-way episodes need at least 5 classes.*has 3"):
        EpisodeSampler(labels_with([4, 4, 4]), SPEC, seed=0, n_episodes=1)


def test_variable_spec_needs_min_way_classes():
    with pytest.raises(ValueError, match="has 4"):
        EpisodeSampler(labels_with([9] * 4), VariableEpisodeSpec(), seed=0, n_episodes=1)


def test_small_classes_are_named():
    labels = labels_with([3, 3, 2, 3, 3, 1, 3])
    with pytest.raises(ValueError, match=r"2 classes have fewer than the 3 examples") as info:
        EpisodeSampler(labels, SPEC, seed=0, n_episodes=1)
    message = str(info.value)
    assert "2 (2)" in message and "5 (1)" in message  # class (count)
    assert "drop_small_classes" in message


def test_many_small_classes_are_summarised():
    labels = labels_with([3] * 5 + [1] * 13)
    with pytest.raises(ValueError, match=r"13 classes have fewer.* and 3 more"):
        EpisodeSampler(labels, SPEC, seed=0, n_episodes=1)


def test_drop_small_classes():
    labels = labels_with([3, 3, 2, 3, 3, 1, 3])
    sampler = EpisodeSampler(labels, SPEC, seed=0, n_episodes=50, drop_small_classes=True)
    assert sampler.dropped_classes.tolist() == [2, 5]
    assert sampler.describe()["dropped_classes"] == [2, 5]
    assert sampler.describe()["n_classes"] == 5
    used = {int(c) for e in sampler.episodes() for c in e.classes}
    assert used == {0, 1, 3, 4, 6}


def test_drop_small_classes_still_needs_enough_classes():
    with pytest.raises(ValueError, match="has 4"):
        EpisodeSampler(labels_with([3, 3, 1, 3, 3]), SPEC, seed=0, n_episodes=1, drop_small_classes=True)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0.0, 1.0, 2.0] * 5), "labels must be integers, got dtype float64"),
        (np.array([True, False] * 8), "labels must be integers, got dtype bool"),
        (np.array(["a", "b"] * 8), "labels must be integers"),
        (np.zeros((4, 5), dtype=np.int64), r"1-D array, got shape \(4, 5\)"),
        (np.array([], dtype=np.int64), "empty"),
        ([], "empty"),
    ],
    ids=["float", "bool", "str", "2-D", "empty", "empty-list"],
)
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(labels, SPEC, seed=0, n_episodes=1)


def test_labels_from_source_attribute():
    class WithTargets:
        targets = [0.5, 1.5]

    with pytest.raises(ValueError, match="integers"):
        EpisodeSampler(WithTargets(), SPEC, seed=0, n_episodes=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_way": 1, "n_shot": 1, "n_query": 1}, "n_way must be at least 2"),
        ({"n_way": 5, "n_shot": 0, "n_query": 1}, "n_shot must be a positive integer"),
        ({"n_way": 5, "n_shot": 1, "n_query": 0}, "n_query must be a positive integer"),
        ({"n_way": 5, "n_shot": 1, "n_query": -3}, "n_query must be a positive integer"),
        ({"n_way": 5.0, "n_shot": 1, "n_query": 1}, "n_way must be a positive integer"),
        ({"n_way": 5, "n_shot": "1", "n_query": 1}, "n_shot must be a positive integer"),
        ({"n_way": 5, "n_shot": True, "n_query": 1}, "n_shot must be a positive integer"),
    ],
)
def test_bad_spec(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSpec(**kwargs)


def test_bad_variable_spec():
    with pytest.raises(ValueError, match="min_way <= max_way"):
        VariableEpisodeSpec(min_way=10, max_way=5)
    with pytest.raises(ValueError, match="max_support >= max_way"):
        VariableEpisodeSpec(max_support=10)


def test_spec_must_be_a_spec():
    with pytest.raises(TypeError, match="spec must be an EpisodeSpec"):
        EpisodeSampler(labels_with([5] * 6), (5, 1, 2), seed=0, n_episodes=1)


@pytest.mark.parametrize(
    "seed, error, match",
    [
        (-1, ValueError, r"seed must be in \[0, 2\*\*64\)"),
        (2**64, ValueError, r"seed must be in \[0, 2\*\*64\)"),
        (1.0, TypeError, "seed must be an integer"),
        ("7", TypeError, "seed must be an integer"),
        (True, TypeError, "seed must be an integer"),
    ],
)
def test_bad_seed(seed, error, match):
    with pytest.raises(error, match=match):
        EpisodeSampler(labels_with([5] * 6), SPEC, seed=seed, n_episodes=1)


def test_extreme_valid_seeds():
    labels = labels_with([5] * 6)
    a = EpisodeSampler(labels, SPEC, seed=0, n_episodes=3).digest()
    b = EpisodeSampler(labels, SPEC, seed=2**64 - 1, n_episodes=3).digest()
    c = EpisodeSampler(labels, SPEC, seed=np.uint64(2**64 - 1), n_episodes=3).digest()
    assert a != b == c


@pytest.mark.parametrize("n_episodes", [0, -1, 2.0, True])
def test_bad_n_episodes(n_episodes):
    with pytest.raises(ValueError, match="n_episodes must be a positive integer"):
        EpisodeSampler(labels_with([5] * 6), SPEC, seed=0, n_episodes=n_episodes)


def test_index_out_of_range():
    sampler = EpisodeSampler(labels_with([5] * 6), SPEC, seed=0, n_episodes=10)
    assert np.array_equal(sampler[-10].support, sampler[0].support)
    for i in (10, 11, -11):
        with pytest.raises(IndexError, match="out of range for a sampler of 10"):
            sampler[i]
    with pytest.raises(IndexError, match="out of range"):
        sampler.batch(5, 11)
    with pytest.raises(IndexError, match="out of range"):
        sampler.batch(6, 5)
    with pytest.raises(IndexError, match="out of range"):
        list(sampler.episodes(0, 11))


def test_variable_sampler_index_out_of_range_and_no_batch():
    sampler = EpisodeSampler(labels_with([8] * 6), VariableEpisodeSpec(), seed=0, n_episodes=4)
    with pytest.raises(IndexError, match="out of range"):
        sampler[4]
    with pytest.raises(TypeError, match="fixed EpisodeSpec"):
        sampler.batch(0, 2)


# ---------------------------------------------------------------- class splits


def test_split_classes_too_many():
    with pytest.raises(ValueError, match="cannot split 10 classes into 5 train, 3 val and 3 test"):
        split_classes(range(10), 5, 3, 3, seed=0)


def test_split_classes_negative_and_bad_seed():
    with pytest.raises(ValueError, match="cannot split"):
        split_classes(range(10), 5, -1, 3, seed=0)
    with pytest.raises(ValueError, match="seed must be in"):
        split_classes(range(10), 5, 2, 3, seed=-4)


def test_split_classes_is_a_seeded_partition():
    split = split_classes([f"c{i}" for i in range(10)], 5, 2, 3, seed=9)
    assert len(split.train) == 5 and len(split.val) == 2 and len(split.test) == 3
    assert sorted(split.train + split.val + split.test) == sorted(f"c{i}" for i in range(10))
    assert split == split_classes([f"c{i}" for i in range(10)], 5, 2, 3, seed=9)


def test_class_split_overlap():
    with pytest.raises(ValueError, match="class 'b' is in both the train and test splits"):
        ClassSplit(("a", "b"), ("c",), ("b", "d"))
    with pytest.raises(ValueError, match="class 3 is in both the val and test splits"):
        ClassSplit((1,), (2, 3), (3,))


# ---------------------------------------------------------------- sources


def write_png(path, value: int, size=(6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)


def test_image_folder_corrupt_file(tmp_path):
    write_png(tmp_path / "cat" / "good.png", 10)
    (tmp_path / "cat" / "bad.png").write_bytes(b"this is not a png at all \x00\x01\x02" * 4)
    source = ImageFolderSource(tmp_path)
    bad = [str(p) for p in source.files].index(str(tmp_path / "cat" / "bad.png"))
    with pytest.raises(ValueError, match=r"bad\.png: cannot decode image"):
        source[bad]
    x, y = source[1 - bad]
    assert y == 0 and x.shape == (3, 4, 6)


def test_image_folder_truncated_file(tmp_path):
    write_png(tmp_path / "cat" / "whole.png", 10, size=(40, 40))
    data = (tmp_path / "cat" / "whole.png").read_bytes()
    (tmp_path / "cat" / "cut.png").write_bytes(data[: len(data) // 2])
    source = ImageFolderSource(tmp_path)
    index = [p.name for p in source.files].index("cut.png")
    with pytest.raises(ValueError, match=r"cut\.png"):
        source[index]


def test_image_folder_labels(tmp_path):
    # classes sorted by name; a non-image file and a stray top-level file are ignored
    for name, n in (("zebra", 2), ("ant", 3), ("moth", 1)):
        for k in range(n):
            write_png(tmp_path / name / f"{k:02d}.png", 40 * k + 20)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("stray")
    source = ImageFolderSource(tmp_path)
    assert source.class_names == ["ant", "moth", "zebra"]
    assert source.labels.dtype == np.int64
    assert source.labels.tolist() == [0, 0, 0, 1, 2, 2]
    assert len(source) == 6
    assert [p.parent.name for p in source.files] == ["ant"] * 3 + ["moth"] + ["zebra"] * 2
    x, y = source[4]
    assert y == 2 and x.dtype == torch.float32 and x.shape == (3, 4, 6)
    assert torch.allclose(x[:, 0, 0], torch.tensor([20, 10, 235]) / 255.0)
    grey = ImageFolderSource(tmp_path, mode="L")
    assert grey[0][0].shape == (1, 4, 6)
    sampler = EpisodeSampler(source, EpisodeSpec(2, 1, 1), seed=0, n_episodes=5, drop_small_classes=True)
    assert sampler.dropped_classes.tolist() == [1]


def test_image_folder_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderSource(tmp_path / "nowhere")
    (tmp_path / "cls").mkdir()
    with pytest.raises(ValueError, match="no images under"):
        ImageFolderSource(tmp_path)


def test_tensor_source_length_mismatch():
    with pytest.raises(ValueError, match="3 images but 4 labels"):
        TensorSource(torch.zeros(3, 1), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="integers"):
        TensorSource(torch.zeros(2, 1), np.array([0.0, 1.0]))


def test_tensor_source_subset():
    source = TensorSource(torch.arange(6).float(), np.array([5, 7, 5, 9, 7, 5]), [f"n{i}" for i in range(10)])
    sub = source.subset([7, 5])
    assert sub.labels.tolist() == [1, 0, 1, 0, 1]
    assert sub.images.tolist() == [0.0, 1.0, 2.0, 4.0, 5.0]
    assert sub.class_names == ["n7", "n5"]
    with pytest.raises(ValueError, match=r"classes not in the source: \[8\]"):
        source.subset([5, 8])


def test_image_folder_empty_class_folder_is_named(tmp_path):
    write_png(tmp_path / "cat" / "0.png", 10)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"dog\b.*add images to it or remove it"):
        ImageFolderSource(tmp_path)


def test_image_folder_ignores_hidden_folders(tmp_path):
    write_png(tmp_path / "cat" / "0.png", 10)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    assert ImageFolderSource(tmp_path).class_names == ["cat"]


def test_small_classes_of_an_image_folder_are_named_by_folder(tmp_path):
    for name, n in (("ant", 3), ("bee", 1), ("cat", 3), ("dog", 2), ("eel", 3), ("fox", 3)):
        for k in range(n):
            write_png(tmp_path / name / f"{k}.png", 30 * k)
    with pytest.raises(ValueError, match=r"2 classes have fewer than the 3 examples") as info:
        EpisodeSampler(ImageFolderSource(tmp_path), SPEC, seed=0, n_episodes=1)
    message = str(info.value)
    assert "bee (label 1): 1 example;" in message and "dog (label 3): 2 examples" in message
    assert "drop_small_classes" in message


def test_small_classes_named_by_a_tensor_source_or_by_argument():
    labels = labels_with([3, 3, 2, 3, 3, 1, 3])
    source = TensorSource(torch.zeros(len(labels), 1), labels, [f"n{c}" for c in range(7)])
    with pytest.raises(ValueError, match=r"n2 \(label 2\): 2 examples; n5 \(label 5\): 1 example\b"):
        EpisodeSampler(source, SPEC, seed=0, n_episodes=1)
    with pytest.raises(ValueError, match=r"x5 \(label 5\): 1 example\b"):
        EpisodeSampler(labels, SPEC, seed=0, n_episodes=1, class_names=[f"x{c}" for c in range(7)])
    sampler = EpisodeSampler(source, SPEC, seed=0, n_episodes=3, drop_small_classes=True)
    assert sampler.digest() == EpisodeSampler(labels, SPEC, seed=0, n_episodes=3, drop_small_classes=True).digest()
