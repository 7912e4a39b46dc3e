"""Image sources for continual streams: Fashion-MNIST, CIFAR-10, Omniglot by alphabet, scikit-learn digits.

Every loader returns a :class:`~protobench.fewshot.datasets.TensorSource` for one ``split``
(``"train"`` or ``"test"``): ``images`` float32 (N, C, H, W) with values in [0, 1], ``labels``
int64 (N,) with values ``0 .. len(class_names) - 1``, and ``class_names``. The data is decoded
once, here; a stream (:mod:`protobench.continual.streams`) only moves the tensors to its device.

- :func:`load_fashion_mnist`: the four original IDX ``.gz`` files, parsed with numpy (:func:`read_idx`).
- :func:`load_cifar10_folder`: the ImageFolder JPEG layout ``root/{train,test}/<class>/<image>``.
- :func:`load_cifar10_pickle`: the original python batches, unpickled with a restricted unpickler.
- :func:`load_omniglot_alphabets`: all 1623 Omniglot characters as classes, with each class's alphabet.
- :func:`load_digits_split`: scikit-learn's bundled digits, split per class (needs no data).
- :func:`holdout`: a stratified validation split of a training source, from a key.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from protobench.continual.experience import permutation
from protobench.fewshot.datasets import ImageFolderSource, TensorSource, load_digits_source
from protobench.fewshot.datasets.image_file import open_image
from protobench.fewshot.datasets.omniglot import _ink_at_size, _read_character_ids, _read_npz_characters
from protobench.fewshot.progress import progress_bar

SPLITS = ("train", "test")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)

OMNIGLOT_TRAIN_DRAWERS = range(0, 15)  # drawers (axis 1 of the npz arrays) 0..14 train, 15..19 test
OMNIGLOT_TEST_DRAWERS = range(15, 20)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1] (value / 255)."""
    return torch.from_numpy(images).float().div_(255.0).contiguous()


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST (IDX)


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array in the gzipped IDX file ``path``, shaped by its header.

    An IDX file is a big-endian uint32 magic number (``0x00000803`` for 3-D image arrays,
    ``0x00000801`` for 1-D label arrays: type 0x08 = unsigned byte, then the number of
    dimensions), one big-endian uint32 per dimension, then the bytes. A file that is not gzip,
    is truncated, has another magic number or holds more or fewer bytes than its header says
    raises ValueError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: cannot decompress ({type(error).__name__}: {error}); the file is truncated "
                         "or not gzip: download it again") from error
    n_dims = magic & 0xFF
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise ValueError(f"{path}: {len(data)} bytes, shorter than an IDX header ({header} bytes): "
                         "the file is truncated, download it again")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found:#010x}, expected {magic:#010x}: "
                         "not the file this loader expects (images and labels swapped?)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=n_dims, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(f"{path}: the header gives shape {shape} ({expected} bytes) but the file holds "
                         f"{len(data) - header} bytes after it: the file is truncated or corrupt, download it again")
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(root: str | Path, split: str) -> TensorSource:
    """Fashion-MNIST's ``split`` from the four original IDX ``.gz`` files in ``root``.

    60,000 train / 10,000 test images, (1, 28, 28), pixel / 255; labels 0..9 named by
    :data:`FASHION_MNIST_CLASSES`. Image and label counts that disagree, or a label outside
    0..9, raise ValueError naming the files.
    """
    _check_split(split)
    image_file, label_file = (Path(root) / name for name in _FASHION_FILES[split])
    images = read_idx(image_file, IDX_IMAGES_MAGIC)
    labels = read_idx(label_file, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"{image_file} holds {len(images)} images but {label_file} {len(labels)} labels: "
                         "the files belong to different splits or one is corrupt")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{label_file}: label {labels.max()} is outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return TensorSource(_uint8_to_unit(images[:, None]), labels.astype(np.int64), list(FASHION_MNIST_CLASSES))


# ----------------------------------------------------------------------------------------------
# CIFAR-10, ImageFolder layout


def _decode_rgb(files: list[Path]) -> list[np.ndarray]:
    return [np.asarray(open_image(path, "RGB")) for path in files]


def load_cifar10_folder(root: str | Path, split: str, *, workers: int = 4, progress: bool = True) -> TensorSource:
    """CIFAR-10's ``split`` from the ImageFolder tree ``root/<split>/<class>/<image>``.

    Class names are the sorted class folder names, in label order (for CIFAR-10: airplane,
    automobile, ..., truck, the official label order). Every image is decoded once (PIL, RGB,
    ``workers`` threads, a progress bar when ``progress``) into float32 (3, H, W) = 8-bit / 255.
    A class folder without images, a file that cannot be decoded and an image whose size differs
    from the first one raise ValueError naming the folder or file.
    """
    _check_split(split)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    folder = ImageFolderSource(Path(root) / split)  # lists the files; raises on an empty class folder
    files = folder.files
    chunks = [files[start:start + 500] for start in range(0, len(files), 500)]
    pixels = None
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress_bar(len(files), f"decode {Path(root).name}/{split}", "image", enabled=progress) as bar:
        futures = [pool.submit(_decode_rgb, chunk) for chunk in chunks]
        try:
            start = 0
            for future in futures:
                arrays = future.result()
                if pixels is None:
                    pixels = np.empty((len(files), *arrays[0].shape), dtype=np.uint8)
                for offset, array in enumerate(arrays):
                    if array.shape != pixels.shape[1:]:
                        raise ValueError(f"{files[start + offset]}: image of shape {array.shape} (height, width, "
                                         f"channels), the first one is {pixels.shape[1:]}: every image must have "
                                         "the same size")
                    pixels[start + offset] = array
                start += len(arrays)
                bar.update(len(arrays))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return TensorSource(_uint8_to_unit(pixels.transpose(0, 3, 1, 2)), folder.labels, list(folder.class_names))


# ----------------------------------------------------------------------------------------------
# CIFAR-10, python pickles

_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCHES = ("test_batch",)
_CIFAR_PIXELS = 3 * 32 * 32


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The globals a pickled numpy array needs, under the module names numpy 1 and 2 write."""
    probe = np.zeros(1, dtype=np.uint8)
    reconstruct = probe.__reduce__()[0]  # numpy's _reconstruct (protocols 0-4)
    frombuffer = probe.__reduce_ex__(5)[0]  # numpy's _frombuffer (protocol 5)
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1").
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class RefusedPickle(pickle.UnpicklingError):
    """A pickle asked for a global the :class:`RestrictedUnpickler` does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, numbers and numpy arrays.

    ``find_class`` resolves only numpy's array reconstruction (``_reconstruct``,
    ``_frombuffer``, ``ndarray``, ``dtype``) and ``_codecs.encode``; any other global (``os.system``,
    ``builtins.eval``, ...) raises :class:`RefusedPickle` (a :class:`pickle.UnpicklingError`) before
    anything runs.
    """

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refused to load {module}.{name}: a CIFAR-10 batch holds only numpy arrays, lists and strings, "
                "so this file is not one (or has been tampered with); do not load it") from None


def _load_restricted(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the CIFAR-10 python version (cifar-10-batches-py) holds "
                                f"{', '.join(_CIFAR_TRAIN_BATCHES + _CIFAR_TEST_BATCHES)} and batches.meta")
    with open(path, "rb") as handle:
        try:
            content = RestrictedUnpickler(handle, encoding="bytes").load()
        except RefusedPickle as error:
            raise RefusedPickle(f"{path}: {error}") from error
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise ValueError(f"{path}: not a readable CIFAR-10 pickle ({type(error).__name__}: {error}); "
                             "download it again") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: holds a {type(content).__name__}, a CIFAR-10 batch is a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _cifar_batch(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_restricted(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        described = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' is {described}, expected uint8 (N, {_CIFAR_PIXELS})")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(data):
        raise ValueError(f"{path}: 'labels' must be {len(data)} integers (one per row of 'data'), got "
                         f"{labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{path}: labels must be in 0..{n_classes - 1} (batches.meta names {n_classes} classes)")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10_pickle(root: str | Path, split: str) -> TensorSource:
    """CIFAR-10's ``split`` from the original python batches in ``root`` (the cifar-10-batches-py folder).

    Train is ``data_batch_1`` .. ``data_batch_5`` in that order, test is ``test_batch``; each is a
    pickled dict with ``b"data"`` uint8 (N, 3072), rows holding the red, green and blue 32x32
    planes, and ``b"labels"``; ``batches.meta`` gives ``b"label_names"``. Unpickling goes through
    :class:`RestrictedUnpickler`, so a file that would import anything else is refused.
    Images are float32 (3, 32, 32) = 8-bit / 255.
    """
    _check_split(split)
    root = Path(root)
    meta = _load_restricted(root / "batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise ValueError(f"{root / 'batches.meta'}: 'label_names' must be a non-empty list of strings")
    class_names = [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    batches = [_cifar_batch(root / name, len(class_names))
               for name in (_CIFAR_TRAIN_BATCHES if split == "train" else _CIFAR_TEST_BATCHES)]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return TensorSource(_uint8_to_unit(images), labels, class_names)


# ----------------------------------------------------------------------------------------------
# Omniglot, characters as classes, grouped by alphabet


class AlphabetSource(TensorSource):
    """A :class:`TensorSource` whose classes belong to alphabets.

    ``alphabets[c]`` (int64) is the index in ``alphabet_names`` of class ``c``'s alphabet.
    """

    def __init__(self, images: torch.Tensor, labels, class_names: list[str], alphabets: np.ndarray,
                 alphabet_names: list[str]) -> None:
        super().__init__(images, labels, class_names)
        self.alphabets = np.asarray(alphabets, dtype=np.int64)
        self.alphabet_names = alphabet_names

    def alphabet_groups(self) -> list[list[int]]:
        """The classes of each alphabet (in alphabet order), e.g. the ``groups`` of
        :func:`protobench.continual.streams.from_groups`: one experience per alphabet."""
        return [np.flatnonzero(self.alphabets == a).tolist() for a in range(len(self.alphabet_names))]


def load_omniglot_alphabets(root: str | Path, split: str, image_size: int = 28) -> AlphabetSource:
    """All 1623 Omniglot characters as classes, from the npz layout under ``root``.

    Reads ``characters.csv`` and ``images_{background,evaluation}.npz`` (as
    :func:`protobench.fewshot.datasets.load_omniglot` does). Class ``c`` is the ``c``-th character
    in id order (ids in the CSV: background 1..964, then evaluation 965..1623: class ``c`` has id ``c + 1``), named
    ``Alphabet/characterNN``. Each character was drawn by 20 drawers (axis 1 of the arrays):
    drawers 0..14 are the ``train`` split and drawers 15..19 the ``test`` split (15 and 5 images
    per class). Images are (1, ``image_size``, ``image_size``) float32, ink = 1, resized with
    antialiasing like ``load_omniglot``, upright (no rotations). Classes are in id order; alphabets
    are numbered by first appearance in id order (the 30 background alphabets, then the 20
    evaluation ones).
    """
    _check_split(split)
    root = Path(root)
    ids = _read_character_ids(root / "characters.csv")
    names = sorted(ids, key=lambda name: ids[name][1])
    numbers = np.array([ids[name][1] for name in names])
    if np.any(numbers[1:] == numbers[:-1]):
        raise ValueError(f"{root / 'characters.csv'}: character id {numbers[1:][numbers[1:] == numbers[:-1]][0]} "
                         "is given to more than one character")
    paper = _read_npz_characters(root, names)
    drawers = OMNIGLOT_TRAIN_DRAWERS if split == "train" else OMNIGLOT_TEST_DRAWERS
    chunk = 64  # characters resized per call: bounds the float intermediate at 64 x 20 x 105 x 105
    images = []
    for start in range(0, len(names), chunk):
        stacked = np.stack([paper[name][drawers.start:drawers.stop] for name in names[start:start + chunk]])
        images.append(_ink_at_size(stacked.reshape(-1, *stacked.shape[2:]), image_size))
    alphabet_names = list(dict.fromkeys(name.split("/")[0] for name in names))
    alphabet_index = {alphabet: i for i, alphabet in enumerate(alphabet_names)}
    alphabets = np.array([alphabet_index[name.split("/")[0]] for name in names], dtype=np.int64)
    labels = np.repeat(np.arange(len(names), dtype=np.int64), len(drawers))
    return AlphabetSource(torch.cat(images).contiguous(), labels, names, alphabets, alphabet_names)


# ----------------------------------------------------------------------------------------------
# scikit-learn digits, and validation hold-outs

DIGITS_TEST_EVERY = 5  # the 5th, 10th, 15th ... example of each class is a test example


def load_digits_split(split: str) -> TensorSource:
    """scikit-learn's bundled digits (1,797 images, 28x28, :func:`load_digits_source`) split per class.

    Within each class, in the file's order, every 5th example (positions 4, 9, 14, ...) is a test
    example and the others are train examples (about 144 train and 36 test per class).
    Deterministic, needs no data on disk: for a quick continual suite.
    """
    _check_split(split)
    source = load_digits_source()
    rank = np.empty(len(source), dtype=np.int64)
    for label in np.unique(source.labels):
        where = np.flatnonzero(source.labels == label)
        rank[where] = np.arange(len(where))
    is_test = rank % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    rows = np.flatnonzero(is_test if split == "test" else ~is_test)
    return TensorSource(source.images[torch.from_numpy(rows)], source.labels[rows], source.class_names)


def holdout(source: TensorSource, fraction: float, key: int) -> tuple[TensorSource, TensorSource]:
    """A stratified split of a training ``source`` into ``(train, val)``, e.g. to choose hyperparameters.

    The examples are shuffled once by :func:`~protobench.continual.experience.permutation`
    (len(source), ``key``); the first ``round(fraction * n_c)`` examples of each class ``c`` in
    that order (at least 1, at most ``n_c - 1``, halves rounded up) go to ``val``. Both parts keep
    the source's labels, class names and order of examples. A class with fewer than 2 examples
    raises ValueError. ``key`` should be a role key (e.g. ``role_key("holdout", seed)``).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = source.labels
    order = permutation(len(labels), key)
    shuffled = labels[order]
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = order[shuffled == label]
        if len(members) < 2:
            raise ValueError(f"class {label} has {len(members)} example: a hold-out needs at least 2 per class")
        n_val = min(max(int(np.floor(fraction * len(members) + 0.5)), 1), len(members) - 1)
        is_val[members[:n_val]] = True
    parts = []
    for rows in (np.flatnonzero(~is_val), np.flatnonzero(is_val)):
        parts.append(TensorSource(source.images[torch.from_numpy(rows)], labels[rows], source.class_names))
    return parts[0], parts[1]
