"""Continual streams built from a train and a test :class:`~protobench.fewshot.datasets.TensorSource`.

Scenarios (van de Ven and Tolias 2019):

- :func:`class_incremental` / :func:`task_incremental`: the class order (drawn from a key or
  given) is cut into contiguous groups, one experience each; :func:`from_groups` takes the
  groups explicitly (e.g. one Omniglot alphabet per experience).
- :func:`permuted` / :func:`rotated`: domain-incremental; every experience has every class, its
  images shifted by a fixed pixel permutation or rotation drawn from ``(seed, k)``.
- :func:`online`: the same data in the same order with no task ids, the boundary-free variant.

Both splits' images (float32) and stream labels are moved to ``device`` once; experiences are
index views into them (:class:`~protobench.continual.experience.ExperienceData`) and domain
shifts are applied to whole batches as they are taken. Everything is a pure function of the
arguments: the same sources and keys give identical tensors, orders and transforms in any process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from protobench.continual.experience import Experience, ExperienceData, Stream, permutation
from protobench.fewshot.counter_rng import CounterStream, check_seed, episode_keys
from protobench.fewshot.datasets import TensorSource

MAX_ROTATION_DEGREES = 180.0


# ----------------------------------------------------------------------------------------------
# Checks


def _check_count(name: str, value, high: int | None = None, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1 or (high is not None and value > high):
        bounds = f"in 1..{high}" if high is not None else ">= 1"
        raise ValueError(f"{name} must be {bounds}, got {value}{hint}")
    return int(value)


def _class_label(source: TensorSource, label: int) -> str:
    names = source.class_names
    return f"class {label} ({names[label]!r})" if names is not None and 0 <= label < len(names) else f"class {label}"


def _source_classes(train: TensorSource, test: TensorSource) -> np.ndarray:
    """The sorted label values of a train/test pair, after checking the two splits agree.

    Images must be (N, C, H, W) of one shape in both splits; class names, when both are given,
    must be equal, and every labelled class must have examples in both splits.
    """
    for split, source in (("train", train), ("test", test)):
        if source.images.ndim != 4:
            raise ValueError(f"{split} images must be (N, C, H, W), got shape {tuple(source.images.shape)}")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise ValueError(f"train images are {tuple(train.images.shape[1:])} but test images "
                         f"{tuple(test.images.shape[1:])}: give the train and test splits of one dataset")
    if train.class_names is not None and test.class_names is not None and train.class_names != test.class_names:
        raise ValueError(f"train and test sources have different classes ({len(train.class_names)} names "
                         f"{train.class_names[:3]}... vs {len(test.class_names)} names {test.class_names[:3]}...): "
                         "give the train and test splits of one dataset")
    classes = np.union1d(train.labels, test.labels)
    if classes.min() < 0:
        raise ValueError(f"labels must be >= 0, got {classes.min()}")
    named = train.class_names if train.class_names is not None else test.class_names
    if named is not None:
        if classes.max() >= len(named):
            raise ValueError(f"label {classes.max()} has no class name ({len(named)} names)")
        classes = np.arange(len(named), dtype=np.int64)
    return classes


def _check_not_empty(train: TensorSource, test: TensorSource, classes: np.ndarray) -> None:
    """Every class in ``classes`` has train and test examples, else a ValueError naming the first that lacks some."""
    for split, source in (("train", train), ("test", test)):
        counts = np.bincount(source.labels, minlength=int(classes.max()) + 1)[classes]
        if (counts == 0).any():
            label = int(classes[np.argmax(counts == 0)])
            raise ValueError(f"{_class_label(source, label)} has no {split} examples, so its experience would have "
                             f"an empty {split} set (or the two splits have different classes): keep only the classes "
                             "both splits have, with TensorSource.subset")


def _check_class_order(class_order, classes: np.ndarray) -> np.ndarray:
    order = np.asarray(class_order)
    if order.ndim != 1 or not (order.size == 0 or np.issubdtype(order.dtype, np.integer)):
        raise ValueError(f"class_order must be a 1-D list of integer class labels, got {class_order!r}")
    order = order.astype(np.int64)
    values, counts = np.unique(order, return_counts=True)
    repeated = values[counts > 1]
    missing = np.setdiff1d(classes, order)
    unknown = np.setdiff1d(order, classes)
    if repeated.size or missing.size or unknown.size:
        problems = [f"{what} {bad[:10].tolist()}" for what, bad in
                    (("repeats", repeated), ("lacks", missing), ("has classes not in the source", unknown)) if bad.size]
        raise ValueError(f"class_order must be a permutation of the source's {len(classes)} classes "
                         f"{classes[:10].tolist()}{'...' if len(classes) > 10 else ''}; it {', '.join(problems)}")
    return order


# ----------------------------------------------------------------------------------------------
# Shared tensors


def _shared(source: TensorSource, stream_label: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's images (float32) and stream labels on ``device``, keeping only rows whose
    class has a stream label (``stream_label[label] >= 0``)."""
    labels = stream_label[source.labels]
    keep = labels >= 0
    images = torch.as_tensor(source.images)
    if not keep.all():
        images = images[torch.from_numpy(np.flatnonzero(keep))]
        labels = labels[keep]
    images = images.to(device=device, dtype=torch.float32).contiguous()
    return images, torch.from_numpy(labels).to(device)


def _rows(labels: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Ascending row indices whose stream label is in [start, stop)."""
    return torch.nonzero((labels >= start) & (labels < stop)).flatten()


# ----------------------------------------------------------------------------------------------
# Class-split streams


def from_groups(name: str, train: TensorSource, test: TensorSource, groups: Sequence[Sequence[int]], *,
                scenario: str = "class-incremental", seed: int | None = None, device="cpu") -> Stream:
    """One experience per group of classes (source label values), in the given order.

    Stream labels number the classes of the concatenated groups ``0, 1, ...`` (so experience
    ``k``'s classes are a contiguous block); ``Stream.class_order`` records the groups. Groups
    must be non-empty and disjoint; classes in no group are left out of the stream (their
    examples are not copied to ``device``). ``scenario`` is ``"class-incremental"`` or
    ``"task-incremental"``; ``seed`` is only recorded (the key the groups were drawn from, if any).
    """
    if scenario not in ("class-incremental", "task-incremental"):
        raise ValueError(f"scenario must be 'class-incremental' or 'task-incremental', got {scenario!r}; "
                         "use permuted/rotated for domain-incremental and online() for the online variant")
    classes = _source_classes(train, test)
    groups = [np.asarray(group, dtype=np.int64).reshape(-1) for group in groups]
    if not groups:
        raise ValueError("groups is empty: give at least one group of classes")
    for k, group in enumerate(groups):
        if group.size == 0:
            raise ValueError(f"group {k} has no classes: every experience needs at least one class")
    order = np.concatenate(groups)
    values, counts = np.unique(order, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"classes {values[counts > 1][:10].tolist()} are in more than one group: "
                         "groups must be disjoint")
    unknown = np.setdiff1d(order, classes)
    if unknown.size:
        raise ValueError(f"classes {unknown[:10].tolist()} are not in the source (classes "
                         f"{classes.min()}..{classes.max()})")
    _check_not_empty(train, test, order)
    stream_label = np.full(int(classes.max()) + 1, -1, dtype=np.int64)
    stream_label[order] = np.arange(len(order))
    train_images, train_labels = _shared(train, stream_label, device)
    test_images, test_labels = _shared(test, stream_label, device)
    experiences, start = [], 0
    for k, group in enumerate(groups):
        stop = start + len(group)
        experiences.append(Experience(
            index=k, task_id=k, classes=tuple(range(start, stop)),
            train=ExperienceData(train_images, train_labels, _rows(train_labels, start, stop)),
            test=ExperienceData(test_images, test_labels, _rows(test_labels, start, stop))))
        start = stop
    return Stream(name=name, scenario=scenario, experiences=tuple(experiences), n_classes=len(order),
                  input_shape=tuple(train_images.shape[1:]), class_order=tuple(tuple(g.tolist()) for g in groups),
                  seed=seed, transform=None, task_aware=True)


def class_incremental(name: str, train: TensorSource, test: TensorSource, n_experiences: int, *,
                      seed: int | None = None, class_order: Sequence[int] | None = None, device="cpu",
                      scenario: str = "class-incremental") -> Stream:
    """Split-``name``: the class order cut into ``n_experiences`` contiguous groups, one per experience.

    Give exactly one of ``seed`` (an integer key in [0, 2**64), e.g. a role key: the order is the
    source's sorted classes permuted by ``permutation(n_classes, seed)``, and ``Stream.seed`` records
    the key) or ``class_order`` (a permutation of the source's classes; ``Stream.seed`` is None).
    Group sizes: with C classes, the first ``C mod n_experiences`` experiences get
    ``C // n_experiences + 1`` classes and the rest ``C // n_experiences`` (``numpy.array_split``).
    The source's classes are ``range(len(class_names))`` when it names them, else the label values present.
    """
    classes = _source_classes(train, test)
    n_experiences = _check_count("n_experiences", n_experiences, len(classes),
                                 f": the source has {len(classes)} classes and every experience needs at least one")
    if (seed is None) == (class_order is None):
        raise ValueError("give exactly one of seed (to draw the class order) and class_order (to fix it)")
    if seed is not None:
        seed = check_seed(seed)
        order = classes[permutation(len(classes), seed)]
    else:
        order = _check_class_order(class_order, classes)
    return from_groups(name, train, test, np.array_split(order, n_experiences), scenario=scenario, seed=seed,
                       device=device)


def task_incremental(name: str, train: TensorSource, test: TensorSource, n_experiences: int, *,
                     seed: int | None = None, class_order: Sequence[int] | None = None, device="cpu") -> Stream:
    """The experiences of :func:`class_incremental`, as scenario ``"task-incremental"`` (the learner is
    given the task id at training and test time)."""
    return class_incremental(name, train, test, n_experiences, seed=seed, class_order=class_order, device=device,
                             scenario="task-incremental")


# ----------------------------------------------------------------------------------------------
# Domain-incremental streams


@dataclass(frozen=True)
class PixelPermutation:
    """A fixed permutation of pixel positions, applied to a batch (n, C, H, W) on its device.

    Output pixel ``i`` (row-major position ``i = row * W + col``) is input pixel
    ``permutation[i]``, in every channel (a pixel's channels move together; with one channel
    this is Avalanche's ``PixelsPermutation``).
    """

    permutation: torch.Tensor

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = images.shape
        if height * width != len(self.permutation):
            raise ValueError(f"images have {height * width} pixels, the permutation {len(self.permutation)}")
        flat = images.reshape(n, channels, height * width)
        return flat[:, :, self.permutation.to(images.device)].reshape(n, channels, height, width)

    def inverse(self) -> PixelPermutation:
        """The permutation that undoes this one."""
        return PixelPermutation(torch.argsort(self.permutation))


@dataclass(frozen=True)
class Rotation:
    """A fixed rotation by ``degrees`` counter-clockwise about the image centre, applied to a batch
    (n, C, H, W): torchvision's ``rotate`` with nearest-neighbour sampling and zero fill (as
    Avalanche's and GEM's rotated MNIST, which rotate PIL images with the default nearest filter)."""

    degrees: float

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return TF.rotate(images, self.degrees, interpolation=InterpolationMode.NEAREST, fill=0.0)


def _domain_stream(name: str, train: TensorSource, test: TensorSource, transforms: list, transform: str,
                   seed: int, device) -> Stream:
    classes = _source_classes(train, test)
    _check_not_empty(train, test, classes)
    stream_label = np.full(int(classes.max()) + 1, -1, dtype=np.int64)
    stream_label[classes] = np.arange(len(classes))
    train_images, train_labels = _shared(train, stream_label, device)
    test_images, test_labels = _shared(test, stream_label, device)
    train_rows = torch.arange(len(train_labels), device=train_labels.device)
    test_rows = torch.arange(len(test_labels), device=test_labels.device)
    experiences = tuple(
        Experience(index=k, task_id=k, classes=tuple(range(len(classes))),
                   train=ExperienceData(train_images, train_labels, train_rows, shift),
                   test=ExperienceData(test_images, test_labels, test_rows, shift))
        for k, shift in enumerate(transforms))
    return Stream(name=name, scenario="domain-incremental", experiences=experiences, n_classes=len(classes),
                  input_shape=tuple(train_images.shape[1:]), class_order=None, seed=seed, transform=transform,
                  task_aware=False)


def pixel_permutations(n_pixels: int, n_experiences: int, seed: int) -> list[PixelPermutation]:
    """Experience ``k``'s permutation: ``permutation(n_pixels, seed, epoch=k)`` (every experience
    permuted, experience 0 included, as in Avalanche's PermutedMNIST)."""
    seed = check_seed(seed)
    return [PixelPermutation(torch.from_numpy(permutation(n_pixels, seed, k))) for k in range(n_experiences)]


def rotation_angles(n_experiences: int, seed: int) -> list[float]:
    """Experience ``k``'s angle in degrees: ``180 * u`` with ``u`` uniform in [0, 1), the first draw of
    the counter-based generator keyed by ``(seed, k)``: uniform in [0, 180) (GEM's rotated MNIST rule,
    Lopez-Paz and Ranzato 2017; Avalanche draws integers in [-180, 180] instead)."""
    seed = check_seed(seed)
    keys = episode_keys(seed, np.arange(n_experiences, dtype=np.uint64))
    return (MAX_ROTATION_DEGREES * CounterStream(keys).uniform(1)[:, 0]).tolist()


def permuted(name: str, train: TensorSource, test: TensorSource, n_experiences: int, *, seed: int,
             device="cpu") -> Stream:
    """Permuted-``name``: ``n_experiences`` domain-incremental experiences of every class, experience
    ``k``'s images permuted by :func:`pixel_permutations` ``[k]`` (experience 0 is permuted too),
    applied batched when a batch is taken. ``transform="permuted"``, ``class_order=None``, ``seed`` recorded."""
    n_experiences = _check_count("n_experiences", n_experiences)
    height, width = train.images.shape[-2:]
    shifts = pixel_permutations(height * width, n_experiences, seed)
    shifts = [PixelPermutation(shift.permutation.to(device)) for shift in shifts]
    return _domain_stream(name, train, test, shifts, "permuted", check_seed(seed), device)


def rotated(name: str, train: TensorSource, test: TensorSource, n_experiences: int, *, seed: int,
            device="cpu") -> Stream:
    """Rotated-``name``: ``n_experiences`` domain-incremental experiences of every class, experience
    ``k``'s images rotated by :func:`rotation_angles` ``[k]`` degrees (:class:`Rotation`), applied
    batched when a batch is taken. ``transform="rotated"``, ``class_order=None``, ``seed`` recorded."""
    n_experiences = _check_count("n_experiences", n_experiences)
    shifts = [Rotation(angle) for angle in rotation_angles(n_experiences, seed)]
    return _domain_stream(name, train, test, shifts, "rotated", check_seed(seed), device)


# ----------------------------------------------------------------------------------------------
# Online


def online(stream: Stream) -> Stream:
    """The boundary-free variant of ``stream``: the same experiences, data and order, scenario
    ``"online"``, every experience's ``task_id`` None.

    A learner is told neither task ids nor boundaries (it should treat the experiences as one
    stream of batches); the runner still evaluates every test set at the hidden boundaries
    (``Experience.index``). ``class_order``, ``seed``, ``transform`` and ``task_aware`` are kept, so
    the result still says which class split or domain shift lies underneath.
    """
    if stream.scenario == "online":
        raise ValueError(f"stream {stream.name!r} is already online")
    experiences = tuple(dataclasses.replace(experience, task_id=None) for experience in stream.experiences)
    return dataclasses.replace(stream, scenario="online", experiences=experiences)
