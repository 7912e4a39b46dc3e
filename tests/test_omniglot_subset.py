"""The Omniglot subset shipped in the package: contents, rotations, deterministic build, raw-pixel sanity."""

from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import pytest
import torch
from conftest import real_data_root

from protobench.benchmarks.registry import get_benchmark
from protobench.fewshot import EpisodeSampler, EpisodeSpec
from protobench.fewshot.datasets import TensorSource, load_omniglot, load_omniglot_subset
from protobench.fewshot.datasets.omniglot_subset import SUBSET_FILE
from protobench.fewshot.datasets.omniglot_subset_build import ZIP_DATE, build_omniglot_subset, write_npz_deterministic

CHARACTERS = {"train": 322, "val": 81, "test": 110}


@pytest.fixture(scope="module")
def subset() -> dict[str, TensorSource]:
    return {split: load_omniglot_subset(split) for split in CHARACTERS}


def _characters(source: TensorSource) -> set[str]:
    return {name.rsplit("/", 1)[0] for name in source.class_names}


@pytest.mark.parametrize("split", list(CHARACTERS))
def test_split_shapes_labels_and_class_counts(subset, split):
    source = subset[split]
    n_classes = 4 * CHARACTERS[split]
    assert source.images.shape == (n_classes * 20, 1, 28, 28)
    assert source.images.dtype == torch.float32
    assert set(source.images.unique().tolist()) == {0.0, 1.0}
    ink = source.images.mean().item()
    assert 0.05 < ink < 0.3, f"ink fraction {ink}: ink must be 1 on a mostly-0 page"
    np.testing.assert_array_equal(source.labels, np.repeat(np.arange(n_classes), 20))
    assert len(source.class_names) == n_classes == len(set(source.class_names))
    assert [name.rsplit("/", 1)[1] for name in source.class_names[:4]] == ["rot000", "rot090", "rot180", "rot270"]
    assert len(_characters(source)) == CHARACTERS[split]


def test_splits_are_disjoint_and_test_alphabets_are_unseen(subset):
    train, val, test = (_characters(subset[split]) for split in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    alphabets = {split: {name.split("/")[0] for name in _characters(subset[split])} for split in subset}
    assert len(alphabets["train"]) == 30 and alphabets["val"] == alphabets["train"]
    assert len(alphabets["test"]) == 20 and not alphabets["test"] & alphabets["train"]


def test_rotated_classes_are_quarter_turns_of_the_upright_one(subset):
    source = subset["test"]
    upright = source.images[source.labels == 0]
    for quarter_turns in (1, 2, 3):
        turned = source.images[source.labels == quarter_turns]
        assert torch.equal(turned, torch.rot90(upright, k=quarter_turns, dims=(2, 3)))
    assert not torch.equal(source.images[source.labels == 1], upright)


def test_without_rotations_one_class_per_character(subset):
    plain = load_omniglot_subset("test", rotations=False)
    assert len(plain.class_names) == CHARACTERS["test"] and plain.class_names[1] == subset["test"].class_names[4]
    assert torch.equal(plain.images, subset["test"].images[np.isin(subset["test"].labels, np.arange(0, 440, 4))])


def test_other_image_size_is_resampled(subset):
    large = load_omniglot_subset("val", image_size=56)
    assert large.images.shape == (324 * 20, 1, 56, 56)
    assert abs(large.images.mean().item() - subset["val"].images.mean().item()) < 0.01


@pytest.mark.parametrize("kwargs", [{"split": "trainval"}, {"split": "train", "image_size": 0}])
def test_bad_arguments_say_what_is_allowed(kwargs):
    with pytest.raises(ValueError, match="split must be one of|image_size must be a positive integer"):
        load_omniglot_subset(**kwargs)


def test_registered_benchmark_matches_the_file():
    benchmark = get_benchmark("omniglot-subset")
    assert benchmark.data_folder is None
    data = benchmark.load(None)
    for split, size in benchmark.splits.items():
        source = data.sources[split]
        assert len(source.class_names) == size.n_classes
        assert np.bincount(source.labels).min() == size.min_class_size
    assert data.checksum == "sha256:" + hashlib.sha256(SUBSET_FILE.read_bytes()).hexdigest()


def test_packaged_file_is_small_and_has_fixed_zip_dates():
    assert SUBSET_FILE.stat().st_size < 400 * 1024
    assert (SUBSET_FILE.parent / "OMNIGLOT_NOTICE.txt").is_file()
    with zipfile.ZipFile(SUBSET_FILE) as archive:
        assert {entry.date_time for entry in archive.infolist()} == {ZIP_DATE}


def test_npz_writer_output_depends_only_on_the_arrays(tmp_path):
    arrays = {"b": np.arange(10, dtype=np.uint8), "a": np.asarray(["x/y", "z"])}
    write_npz_deterministic(tmp_path / "first.npz", arrays)
    write_npz_deterministic(tmp_path / "second.npz", dict(reversed(arrays.items())))
    assert (tmp_path / "first.npz").read_bytes() == (tmp_path / "second.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "second.npz") as archive:
        entries = archive.infolist()
    assert [entry.filename for entry in entries] == ["a.npy", "b.npy"]
    assert {(entry.date_time, entry.create_system, entry.external_attr >> 16) for entry in entries} == {
        (ZIP_DATE, 3, 0o644)}
    with np.load(tmp_path / "second.npz") as loaded:
        np.testing.assert_array_equal(loaded["b"], arrays["b"])
        np.testing.assert_array_equal(loaded["a"], arrays["a"])


def _raw_pixel_ncm_accuracy(source: TensorSource, spec: EpisodeSpec, n_episodes: int, seed: int) -> float:
    """Mean accuracy of nearest-class-mean on raw pixels (squared Euclidean) over sampled episodes."""
    pixels = source.images.reshape(len(source), -1).numpy()
    batch = EpisodeSampler(source, spec, seed=seed, n_episodes=n_episodes).batch(0, n_episodes)
    means = pixels[batch.support].reshape(n_episodes, spec.n_way, spec.n_shot, -1).mean(axis=2)
    queries = pixels[batch.query]
    distances = ((queries[:, :, None, :] - means[:, None, :, :]) ** 2).sum(axis=-1)
    return float((distances.argmin(axis=-1) == batch.query_labels).mean())


def test_raw_pixel_nearest_class_mean_is_above_chance_and_far_below_perfect(subset):
    accuracy = _raw_pixel_ncm_accuracy(subset["test"], EpisodeSpec(5, 1, 15), n_episodes=300, seed=0)
    assert 0.3 < accuracy < 0.55, f"raw-pixel 5-way 1-shot accuracy {accuracy:.3f} (about 0.41 expected)"


def test_builder_reproduces_the_packaged_file_byte_for_byte(tmp_path):
    source_root = real_data_root("omniglot") / "omniglot"
    first = build_omniglot_subset(source_root, tmp_path / "first.npz").read_bytes()
    second = build_omniglot_subset(source_root, tmp_path / "second.npz").read_bytes()
    assert first == second
    assert first == SUBSET_FILE.read_bytes(), "the packaged subset differs from a fresh build: rebuild and commit it"


def test_subset_images_are_the_full_loaders_binarised(subset):
    full = load_omniglot(real_data_root("omniglot") / "omniglot", "test")
    full_label = {name: label for label, name in enumerate(full.class_names)}
    shared = [name for name in subset["test"].class_names if name in full_label]
    assert len(shared) >= 100
    for label, name in enumerate(subset["test"].class_names):
        if name in full_label:
            expected = (full.images[full.labels == full_label[name]] >= 0.5).float()
            assert torch.equal(subset["test"].images[subset["test"].labels == label], expected), name
