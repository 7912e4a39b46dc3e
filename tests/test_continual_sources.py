"""Continual sources: IDX, CIFAR-10 folder and pickle, Omniglot by alphabet, digits split, hold-outs.

Small files the tests write check parsing and every error; the real-data tests (skipped without
``PROTOBENCH_DATA``) check counts and compare a few images with an independent decoding.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import real_data_root
from PIL import Image

from protobench.continual.experience import permutation
from protobench.continual.sources import (
    FASHION_MNIST_CLASSES,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    RefusedPickle,
    holdout,
    load_cifar10_folder,
    load_cifar10_pickle,
    load_digits_split,
    load_fashion_mnist,
    load_omniglot_alphabets,
    read_idx,
)
from protobench.fewshot.datasets import TensorSource, load_digits_source

# ----------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file written by hand: big-endian magic (0x08 = ubyte, then ndim) and dims, then the bytes."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_fashion(root, split_sizes=(("train", 12), ("t10k", 5)), labels_count=None, label_values=None):
    arrays = {}
    generator = np.random.default_rng(7)
    for prefix, n in split_sizes:
        images = generator.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10 if label_values is None else label_values
        labels = labels[:labels_count] if labels_count is not None else labels
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
        arrays[prefix] = (images, labels)
    return arrays


def test_fashion_mnist_parses_idx(tmp_path):
    arrays = write_fashion(tmp_path)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        source = load_fashion_mnist(tmp_path, split)
        images, labels = arrays[prefix]
        assert source.images.dtype == torch.float32 and source.images.shape == (len(images), 1, 28, 28)
        assert torch.equal(source.images[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
        assert source.labels.dtype == np.int64 and source.labels.tolist() == labels.tolist()
        assert source.class_names == list(FASHION_MNIST_CLASSES) and source.class_names[9] == "Ankle boot"


def test_read_idx_errors(tmp_path):
    write_fashion(tmp_path)
    images_file = tmp_path / "train-images-idx3-ubyte.gz"
    labels_file = tmp_path / "train-labels-idx1-ubyte.gz"
    with pytest.raises(ValueError, match="magic number 0x00000801, expected 0x00000803"):
        read_idx(labels_file, IDX_IMAGES_MAGIC)
    # a gzip stream cut in the middle
    cut = tmp_path / "cut.gz"
    cut.write_bytes(images_file.read_bytes()[:500])
    with pytest.raises(ValueError, match="cut.gz: cannot decompress"):
        read_idx(cut, IDX_IMAGES_MAGIC)
    # a valid gzip whose payload is one image short of its header
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(gzip.decompress(images_file.read_bytes())[:-784]))
    with pytest.raises(ValueError, match=r"shape \(12, 28, 28\) \(9408 bytes\) but the file holds 8624"):
        read_idx(short, IDX_IMAGES_MAGIC)
    header_only = tmp_path / "header.gz"
    header_only.write_bytes(gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(ValueError, match="shorter than an IDX header"):
        read_idx(header_only, IDX_LABELS_MAGIC)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.gz", IDX_LABELS_MAGIC)


def test_fashion_mnist_counts_and_labels_checked(tmp_path):
    write_fashion(tmp_path, labels_count=11)
    with pytest.raises(ValueError, match="12 images but .*train-labels-idx1-ubyte.gz 11 labels"):
        load_fashion_mnist(tmp_path, "train")
    write_fashion(tmp_path, label_values=np.full(12, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10 is outside 0..9"):
        load_fashion_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist(tmp_path, "val")


# ----------------------------------------------------------------------------------------------
# CIFAR-10 folder


def write_folder_images(root, classes: dict[str, int], size=(8, 8), suffix=".png"):
    """``root/<class>/NNNN<suffix>`` with random RGB pixels; returns {path: uint8 (H, W, 3)}."""
    generator = np.random.default_rng(3)
    written = {}
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = generator.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            path = root / name / f"{i:04d}{suffix}"
            Image.fromarray(pixels).save(path)
            written[path] = pixels
    return written


def test_cifar_folder_decodes_in_sorted_class_order(tmp_path):
    written = write_folder_images(tmp_path / "test", {"truck": 2, "airplane": 3, "cat": 1})
    source = load_cifar10_folder(tmp_path, "test", workers=2, progress=False)
    assert source.class_names == ["airplane", "cat", "truck"]
    assert source.labels.tolist() == [0, 0, 0, 1, 2, 2]
    assert source.images.shape == (6, 3, 8, 8) and source.images.dtype == torch.float32
    expected = [written[tmp_path / "test" / name / f"{i:04d}.png"] for name, count in
                (("airplane", 3), ("cat", 1), ("truck", 2)) for i in range(count)]
    for image, pixels in zip(source.images, expected, strict=True):
        assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)


def test_cifar_folder_errors(tmp_path):
    write_folder_images(tmp_path / "train", {"a": 2, "b": 2})
    (tmp_path / "train" / "b" / "0002.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"b/0002.jpg: cannot decode image"):
        load_cifar10_folder(tmp_path, "train", progress=False)
    (tmp_path / "train" / "b" / "0002.jpg").unlink()
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(ValueError, match=r"no images under the class folder .*train/c"):
        load_cifar10_folder(tmp_path, "train", progress=False)
    (tmp_path / "train" / "c").rmdir()
    write_folder_images(tmp_path / "train", {"c": 1}, size=(9, 8))
    with pytest.raises(ValueError, match=r"c/0000.png: image of shape \(9, 8, 3\).*\(8, 8, 3\)"):
        load_cifar10_folder(tmp_path, "train", progress=False)
    with pytest.raises(FileNotFoundError):
        load_cifar10_folder(tmp_path, "test", progress=False)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 pickles


class Py2Pickler(pickle._Pickler):
    """Writes ``str`` and ``bytes`` as Python 2 strings (BINSTRING), as cPickle did for the original batches."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string


def python2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2 with numpy 1 wrote the CIFAR-10 batches (protocol 2, str keys, numpy.core)."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar_pickles(root, style: str, per_batch: int = 4, n_test: int = 6):
    """data_batch_1..5, test_batch, batches.meta; ``style`` "py2" (original) or "py3-protocol-N"."""
    root.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(11)

    def dump(obj, name):
        if style == "py2":
            (root / name).write_bytes(python2_pickle(obj))
        else:
            (root / name).write_bytes(pickle.dumps(obj, protocol=int(style.rsplit("-", 1)[1])))

    key = (lambda k: k) if style == "py2" else (lambda k: k.encode())
    dump({key("label_names"): [key(name) for name in CLASSES], key("num_vis"): 3072}, "batches.meta")
    images, labels = {}, {}
    for split, names, n in (("train", [f"data_batch_{i}" for i in range(1, 6)], per_batch),
                            ("test", ["test_batch"], n_test)):
        images[split], labels[split] = [], []
        for name in names:
            data = generator.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            batch_labels = generator.integers(0, 10, size=n).tolist()
            dump({key("batch_label"): key(name), key("data"): data, key("labels"): batch_labels,
                  key("filenames"): [key(f"{name}_{i}.png") for i in range(n)]}, name)
            images[split].append(data)
            labels[split] += batch_labels
    return {split: (np.concatenate(images[split]), labels[split]) for split in images}


@pytest.mark.parametrize("style", ["py2", "py3-protocol-2", "py3-protocol-5"])
def test_cifar_pickle_loads(tmp_path, style):
    written = write_cifar_pickles(tmp_path, style)
    for split, n in (("train", 20), ("test", 6)):
        source = load_cifar10_pickle(tmp_path, split)
        data, labels = written[split]
        assert source.class_names == CLASSES
        assert source.images.shape == (n, 3, 32, 32) and source.images.dtype == torch.float32
        assert source.labels.tolist() == labels
        # row layout: 1024 red values, then green, then blue, each plane row-major
        for image, row in zip(source.images, data, strict=True):
            for channel in range(3):
                for y, x in ((0, 0), (5, 7), (31, 31), (17, 2)):
                    assert image[channel, y, x].item() == pytest.approx(row[channel * 1024 + y * 32 + x] / 255)


class SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Evaluate:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("payload", ["system", "eval", "meta"])
def test_cifar_pickle_refuses_other_globals(tmp_path, payload):
    write_cifar_pickles(tmp_path, "py2")
    marker = tmp_path / "pwned"
    evil = SystemCall(f"touch {marker}") if payload in ("system", "meta") else Evaluate()
    target = "batches.meta" if payload == "meta" else "data_batch_3"
    (tmp_path / target).write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}, protocol=2))
    refused = "posix.system|os.system" if payload != "eval" else "(__builtin__|builtins).eval"
    with pytest.raises(RefusedPickle, match=rf"{target}: refused to load ({refused})"):
        load_cifar10_pickle(tmp_path, "train")
    assert not marker.exists()
    if payload != "meta":
        assert len(load_cifar10_pickle(tmp_path, "test")) == 6  # the other files still load


def test_cifar_pickle_errors(tmp_path):
    write_cifar_pickles(tmp_path, "py3-protocol-2")
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5 not found"):
        load_cifar10_pickle(tmp_path, "train")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"'data' is uint8 \(2, 100\), expected uint8 \(N, 3072\)"):
        load_cifar10_pickle(tmp_path, "test")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(ValueError, match="'labels' must be 2 integers"):
        load_cifar10_pickle(tmp_path, "test")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(ValueError, match=r"labels must be in 0..9"):
        load_cifar10_pickle(tmp_path, "test")
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": 1}, protocol=2)[:-5])
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR-10 pickle .*truncated"):
        load_cifar10_pickle(tmp_path, "test")


# ----------------------------------------------------------------------------------------------
# Omniglot by alphabet


def write_omniglot(root):
    """A tiny npz layout: 3 background characters (alphabets A, B) and 2 evaluation ones (alphabet C)."""
    generator = np.random.default_rng(5)
    parts = {"background": generator.random((3, 20, 105, 105)) < 0.8,
             "evaluation": generator.random((2, 20, 105, 105)) < 0.8}
    parts["background"][1, 0] = True  # character 2, drawer 0: blank paper
    parts["evaluation"][0, 19] = False  # character 4, drawer 19: all ink
    rows = [(1, "background", "A", "character01"), (2, "background", "A", "character02"),
            (3, "background", "B", "character01"), (966, "evaluation", "C", "character02"),
            (965, "evaluation", "C", "character01")]  # evaluation ids start at 965; row order is not id order
    (root / "characters.csv").write_text("id,set,alphabet,character\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d
                                                                                  in rows))
    for part, images in parts.items():
        np.savez_compressed(root / f"images_{part}.npz", images=images, labels=np.arange(len(images)))
    return np.concatenate([parts["background"], parts["evaluation"]])


def test_omniglot_alphabets_layout(tmp_path):
    paper = write_omniglot(tmp_path)
    for split, drawers in (("train", range(0, 15)), ("test", range(15, 20))):
        source = load_omniglot_alphabets(tmp_path, split)
        assert source.class_names == ["A/character01", "A/character02", "B/character01", "C/character01",
                                      "C/character02"]
        assert source.alphabet_names == ["A", "B", "C"] and source.alphabets.tolist() == [0, 0, 1, 2, 2]
        assert source.alphabet_groups() == [[0, 1], [2], [3, 4]]
        assert source.images.shape == (5 * len(drawers), 1, 28, 28)
        assert source.labels.tolist() == np.repeat(np.arange(5), len(drawers)).tolist()
        ink = torch.from_numpy(~paper[:, drawers.start:drawers.stop]).float().reshape(-1, 1, 105, 105)
        expected = F.interpolate(ink, size=(28, 28), mode="bilinear", antialias=True)
        assert torch.allclose(source.images, expected, atol=1e-6)
    train, test = load_omniglot_alphabets(tmp_path, "train"), load_omniglot_alphabets(tmp_path, "test")
    assert train.images[15].abs().max() == 0  # blank paper is no ink
    assert torch.allclose(test.images[3 * 5 + 4], torch.ones(1, 28, 28), atol=1e-6)  # all ink is 1


def test_omniglot_alphabets_bad_csv(tmp_path):
    write_omniglot(tmp_path)
    text = (tmp_path / "characters.csv").read_text().replace("\n3,background", "\n2,background")
    (tmp_path / "characters.csv").write_text(text)
    with pytest.raises(ValueError, match="character id 2 is given to more than one character"):
        load_omniglot_alphabets(tmp_path, "train")


# ----------------------------------------------------------------------------------------------
# digits and hold-outs


def test_digits_split_every_fifth_per_class():
    full = load_digits_source()
    train, test = load_digits_split("train"), load_digits_split("test")
    assert len(train) + len(test) == len(full) == 1797
    for label in range(10):
        members = np.flatnonzero(full.labels == label)
        test_rows = members[4::5]
        train_rows = np.setdiff1d(members, test_rows)
        assert torch.equal(test.images[test.labels == label], full.images[torch.from_numpy(test_rows)])
        assert torch.equal(train.images[train.labels == label], full.images[torch.from_numpy(train_rows)])
    assert test.class_names == [str(d) for d in range(10)]


def numbered_source(counts: list[int]) -> TensorSource:
    """Class c has counts[c] examples; image i holds the value i (so rows can be traced)."""
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = labels[permutation(len(labels), 99)]  # classes interleaved
    images = torch.arange(len(labels), dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    return TensorSource(images.contiguous(), labels, [f"c{c}" for c in range(len(counts))])


def test_holdout_is_stratified_and_keyed():
    source = numbered_source([10, 7, 3, 2])
    train, val = holdout(source, 0.25, key=123)
    # round(0.25 n), at least 1 and at most n - 1: 10 -> 3 (2.5 rounds up), 7 -> 2, 3 -> 1, 2 -> 1
    assert np.bincount(val.labels).tolist() == [3, 2, 1, 1]
    assert np.bincount(train.labels).tolist() == [7, 5, 2, 1]
    train_rows = train.images[:, 0, 0, 0].long().numpy()
    val_rows = val.images[:, 0, 0, 0].long().numpy()
    assert np.array_equal(np.sort(np.concatenate([train_rows, val_rows])), np.arange(len(source)))
    assert np.all(np.diff(train_rows) > 0) and np.all(np.diff(val_rows) > 0)  # source order kept
    assert np.array_equal(source.labels[val_rows], val.labels) and val.class_names == source.class_names
    # by hand: the first examples of each class in the order permutation(len, key) gives
    order = permutation(len(source), 123)
    expected = np.sort(np.concatenate([order[source.labels[order] == c][:n] for c, n in enumerate([3, 2, 1, 1])]))
    assert np.array_equal(val_rows, expected)
    again = holdout(source, 0.25, key=123)[1]
    assert torch.equal(again.images, val.images)
    assert not torch.equal(holdout(source, 0.25, key=124)[1].images, val.images)


def test_holdout_errors():
    with pytest.raises(ValueError, match="class 1 has 1 example"):
        holdout(numbered_source([4, 1]), 0.5, key=0)
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fraction must be in"):
            holdout(numbered_source([4, 4]), fraction, key=0)


# ----------------------------------------------------------------------------------------------
# real data


def test_real_fashion_mnist():
    root = real_data_root("fashion-mnist") / "fashion-mnist"
    for split, n, prefix in (("train", 60000, "train"), ("test", 10000, "t10k")):
        source = load_fashion_mnist(root, split)
        assert source.images.shape == (n, 1, 28, 28)
        assert np.bincount(source.labels).tolist() == [n // 10] * 10
        assert 0.0 <= source.images.min() and source.images.max() <= 1.0
        raw = gzip.decompress((root / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
        raw_labels = gzip.decompress((root / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())
        for i in (0, 1, n - 1):
            pixels = np.frombuffer(raw, np.uint8, count=784, offset=16 + 784 * i).reshape(28, 28)
            assert torch.equal(source.images[i, 0], torch.from_numpy(pixels / np.float32(255)))
            assert source.labels[i] == raw_labels[8 + i]


def test_real_cifar10_folder_test_split():
    root = real_data_root("cifar10") / "cifar10"
    source = load_cifar10_folder(root, "test", progress=False)
    assert source.class_names == CLASSES
    assert source.images.shape == (10000, 3, 32, 32)
    assert np.bincount(source.labels).tolist() == [1000] * 10
    for i in (0, 4321, 9999):
        path = root / "test" / CLASSES[source.labels[i]] / f"{i % 1000:04d}.jpg"
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        assert torch.equal(source.images[i], torch.tensor(pixels).permute(2, 0, 1).float() / 255)


def test_real_omniglot_alphabets():
    root = real_data_root("omniglot") / "omniglot"
    train, test = load_omniglot_alphabets(root, "train"), load_omniglot_alphabets(root, "test")
    assert len(train) == 1623 * 15 and len(test) == 1623 * 5
    assert train.class_names == test.class_names and len(test.class_names) == 1623
    assert np.array_equal(train.alphabets, test.alphabets)
    assert len(test.alphabet_names) == 50 and sum(map(len, test.alphabet_groups())) == 1623
    assert test.class_names[0] == "Arcadian/character01" and test.alphabet_names[0] == "Arcadian"
    with np.load(root / "images_evaluation.npz") as archive:
        last = archive["images"][-1]  # character id 1623
    ink = torch.from_numpy(~last).float()[:, None]
    expected = F.interpolate(ink, size=(28, 28), mode="bilinear", antialias=True)
    assert torch.allclose(train.images[-15:], expected[:15], atol=1e-6)
    assert torch.allclose(test.images[-5:], expected[15:], atol=1e-6)
