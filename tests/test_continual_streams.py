"""Continual streams: class order, stream labels, group sizes, domain shifts, online, errors, reproducibility.

Synthetic sources whose image ``i`` carries ``i`` in its first pixel let every test trace an
experience's examples back to the source rows and check them against hand computations.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_data_root

from protobench.continual.experience import permutation
from protobench.continual.sources import load_fashion_mnist, load_omniglot_alphabets
from protobench.continual.streams import (
    Rotation,
    class_incremental,
    from_groups,
    online,
    permuted,
    pixel_permutations,
    rotated,
    rotation_angles,
    task_incremental,
)
from protobench.fewshot.datasets import TensorSource


def traced_source(counts, shape=(1, 4, 4), names=True, offset=0) -> TensorSource:
    """Class c has counts[c] examples, interleaved; image i is filled with i + offset (its row id)."""
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = labels[permutation(len(labels), 5)]
    rows = torch.arange(len(labels), dtype=torch.float32) + offset
    images = rows.reshape(-1, 1, 1, 1).expand(-1, *shape).contiguous()
    return TensorSource(images, labels, [f"class{c}" for c in range(len(counts))] if names else None)


def pair(n_classes=10, train_per_class=6, test_per_class=2, **kwargs):
    return (traced_source([train_per_class] * n_classes, **kwargs),
            traced_source([test_per_class] * n_classes, offset=1000, **kwargs))


def source_rows(data) -> np.ndarray:
    """The source row ids behind an ExperienceData (first pixel of each untransformed image)."""
    return data.images[data.indices][:, 0, 0, 0].long().numpy()


# ----------------------------------------------------------------------------------------------
# class-split streams


def test_class_order_from_seed_and_stream_labels():
    train, test = pair()
    stream = class_incremental("toy", train, test, 5, seed=42)
    order = permutation(10, 42)  # the source's classes 0..9 permuted by the key
    assert stream.class_order == tuple(tuple(order[i:i + 2].tolist()) for i in range(0, 10, 2))
    assert stream.seed == 42 and stream.scenario == "class-incremental" and stream.task_aware
    assert stream.n_classes == 10 and stream.input_shape == (1, 4, 4) and len(stream) == 5
    assert stream.spec() == {"scenario": "class-incremental", "n_experiences": 5,
                             "class_order": [list(g) for g in stream.class_order], "seed": 42, "transform": None}
    for k, experience in enumerate(stream):
        assert experience.index == experience.task_id == k and experience.classes == (2 * k, 2 * k + 1)
        for data, source, offset in ((experience.train, train, 0), (experience.test, test, 1000)):
            rows = source_rows(data) - offset
            assert np.all(np.diff(rows) > 0)  # ascending source order
            # every example of the experience's two classes, nothing else
            assert np.array_equal(rows, np.flatnonzero(np.isin(source.labels, order[2 * k:2 * k + 2])))
            # stream label = position of the source label in the class order
            _, labels = data.tensors()
            assert np.array_equal(order[labels.numpy()], source.labels[rows])


@pytest.mark.parametrize(("n_classes", "n_experiences", "sizes"),
                         [(10, 3, [4, 3, 3]), (10, 4, [3, 3, 2, 2]), (7, 7, [1] * 7), (5, 1, [5]), (10, 5, [2] * 5)])
def test_group_sizes(n_classes, n_experiences, sizes):
    train, test = pair(n_classes)
    stream = class_incremental("toy", train, test, n_experiences, class_order=list(range(n_classes)))
    assert [len(e.classes) for e in stream] == sizes
    assert [len(g) for g in stream.class_order] == sizes
    assert [c for e in stream for c in e.classes] == list(range(n_classes))  # contiguous blocks
    assert [len(e.train) for e in stream] == [6 * s for s in sizes]


def test_explicit_class_order_and_task_incremental():
    train, test = pair()
    order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    stream = task_incremental("toy", train, test, 2, class_order=order)
    assert stream.scenario == "task-incremental" and stream.seed is None
    assert stream.class_order == ((3, 1, 4, 0, 5), (9, 2, 6, 8, 7))
    x, y = stream[1].test.tensors()
    assert np.array_equal(np.array(order)[y.numpy()], test.labels[x[:, 0, 0, 0].long().numpy() - 1000])


def test_tensors_are_held_once():
    train, test = pair()
    stream = class_incremental("toy", train, test, 5, seed=1)
    for split in ("train", "test"):
        first = getattr(stream[0], split)
        for experience in stream:
            data = getattr(experience, split)
            assert data.images is first.images and data.labels is first.labels
            assert data.images.dtype == torch.float32 and data.images.device.type == "cpu"
    assert sum(len(e.train) for e in stream) == len(stream[0].train.images) == 60


def test_from_groups_subset_and_alphabet_like_groups():
    train, test = pair(6)
    stream = from_groups("toy", train, test, [[5, 0], [2]])
    assert stream.class_order == ((5, 0), (2,)) and stream.n_classes == 3 and stream.seed is None
    assert [e.classes for e in stream] == [(0, 1), (2,)]
    assert len(stream[0].train.images) == 18  # only the examples of classes 5, 0 and 2 are kept
    _, labels = stream[0].train.tensors()
    rows = source_rows(stream[0].train)
    assert np.array_equal(np.array([5, 0])[labels.numpy()], train.labels[rows])


def test_class_split_errors():
    train, test = pair(4)
    with pytest.raises(ValueError, match=r"n_experiences must be in 1..4, got 5: the source has 4 classes"):
        class_incremental("toy", train, test, 5, seed=0)
    with pytest.raises(ValueError, match="n_experiences must be in 1..4, got 0"):
        class_incremental("toy", train, test, 0, seed=0)
    with pytest.raises(ValueError, match="exactly one of seed"):
        class_incremental("toy", train, test, 2)
    with pytest.raises(ValueError, match="exactly one of seed"):
        class_incremental("toy", train, test, 2, seed=0, class_order=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"permutation of the source's 4 classes \[0, 1, 2, 3\]; it repeats \[1\], "
                                         r"lacks \[3\]"):
        class_incremental("toy", train, test, 2, class_order=[0, 1, 1, 2])
    with pytest.raises(ValueError, match=r"has classes not in the source \[7\]"):
        class_incremental("toy", train, test, 2, class_order=[0, 1, 2, 3, 7])
    with pytest.raises(ValueError, match="seed must be in"):
        class_incremental("toy", train, test, 2, seed=-1)
    with pytest.raises(ValueError, match="more than one group"):
        from_groups("toy", train, test, [[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="group 1 has no classes"):
        from_groups("toy", train, test, [[0, 1], []])
    with pytest.raises(ValueError, match=r"classes \[9\] are not in the source"):
        from_groups("toy", train, test, [[0, 9]])
    with pytest.raises(ValueError, match="scenario must be"):
        from_groups("toy", train, test, [[0, 1]], scenario="domain-incremental")


def test_source_pair_errors():
    train, test = pair(4)
    # a named class with no test examples: its experience's test set would be empty
    lacking = TensorSource(test.images[test.labels != 2], test.labels[test.labels != 2], test.class_names)
    with pytest.raises(ValueError, match=r"class 2 \('class2'\) has no test examples.*empty test set"):
        class_incremental("toy", train, lacking, 2, seed=0)
    # unnamed classes: the label sets differ
    unnamed_train, unnamed_test = pair(4, names=False)
    fewer = TensorSource(unnamed_test.images[unnamed_test.labels < 3], unnamed_test.labels[unnamed_test.labels < 3])
    with pytest.raises(ValueError, match=r"class 3 has no test examples.*different classes"):
        permuted("toy", unnamed_train, fewer, 2, seed=0)
    renamed = TensorSource(test.images, test.labels, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="different classes"):
        class_incremental("toy", train, renamed, 2, seed=0)
    wide = TensorSource(torch.zeros(len(test), 1, 5, 4), test.labels, test.class_names)
    with pytest.raises(ValueError, match=r"train images are \(1, 4, 4\) but test images \(1, 5, 4\)"):
        rotated("toy", train, wide, 2, seed=0)
    flat = TensorSource(torch.zeros(len(test), 16), test.labels, test.class_names)
    with pytest.raises(ValueError, match=r"test images must be \(N, C, H, W\)"):
        class_incremental("toy", train, flat, 2, seed=0)
    # a class named but absent from both splits
    unnamed_only = TensorSource(train.images, train.labels, [*train.class_names, "ghost"])
    with pytest.raises(ValueError, match=r"class 4 \('ghost'\) has no train examples"):
        class_incremental("toy", unnamed_only, TensorSource(test.images, test.labels, unnamed_only.class_names), 2,
                          seed=0)


def test_checked_task_id():
    train, test = pair(4)
    stream = class_incremental("toy", train, test, 2, seed=0)
    assert stream.experience(1) is stream[1]
    for bad in (2, -1):
        with pytest.raises(IndexError, match=r"task id -?\d is out of range: stream 'toy' has 2 experiences, "
                                             r"task ids 0..1"):
            stream.experience(bad)
    with pytest.raises(TypeError, match="task id must be an integer in 0..1"):
        stream.experience(True)


# ----------------------------------------------------------------------------------------------
# domain-incremental streams


def test_pixel_permutation_is_a_bijection_and_inverts():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    shift = pixel_permutations(20, 3, seed=9)[1]
    assert torch.equal(shift.permutation, torch.from_numpy(permutation(20, 9, 1)))
    out = shift(images)
    for i in range(20):  # output pixel i is input pixel permutation[i], in every channel
        source = int(shift.permutation[i])
        assert torch.equal(out[:, :, i // 5, i % 5], images[:, :, source // 5, source % 5])
    assert torch.equal(out.flatten(2).sort(dim=2).values, images.flatten(2))  # a bijection of pixels
    assert torch.equal(shift.inverse()(out), images)
    assert not torch.equal(out, images)


def test_permuted_stream():
    train, test = pair(3)
    stream = permuted("toy", train, test, 4, seed=7)
    assert stream.scenario == "domain-incremental" and stream.transform == "permuted"
    assert stream.class_order is None and stream.seed == 7 and not stream.task_aware and stream.n_classes == 3
    perms = [e.train.transform.permutation for e in stream]
    assert all(torch.equal(p, torch.from_numpy(permutation(16, 7, k))) for k, p in enumerate(perms))
    assert not torch.equal(perms[0], torch.arange(16))  # experience 0 is permuted too (Avalanche)
    assert len({tuple(p.tolist()) for p in perms}) == 4
    for k, experience in enumerate(stream):
        assert experience.classes == (0, 1, 2) and experience.task_id == k
        assert experience.test.transform is experience.train.transform
        assert len(experience.train) == 18 and len(experience.test) == 6
        x, y = experience.test.take(torch.tensor([0, 5]))
        raw = test.images[[0, 5]]
        assert torch.equal(x, raw.flatten(2)[:, :, perms[k]].reshape(raw.shape))
        assert y.tolist() == test.labels[[0, 5]].tolist()


def test_rotation_matches_quarter_turns_and_a_hand_computed_pixel():
    images = torch.rand(3, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Rotation(0.0)(images), images)
    assert torch.equal(Rotation(90.0)(images), torch.rot90(images, 1, dims=(2, 3)))  # counter-clockwise
    assert torch.equal(Rotation(180.0)(images), torch.rot90(images, 2, dims=(2, 3)))
    # a lone pixel 4 to the right of the centre of a 9x9 image, turned 45 degrees counter-clockwise,
    # lands near (x, y) = (4 + 4 cos 45, 4 - 4 sin 45) = (6.83, 1.17), i.e. row 1, column 7
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 8] = 1.0
    turned = Rotation(45.0)(dot)[0, 0]
    assert turned[1, 7] == 1.0 and turned.sum() >= 1
    rows, cols = torch.nonzero(turned, as_tuple=True)
    assert abs(rows.float().mean() - (4 - 4 * math.sin(math.pi / 4))) < 0.6
    assert abs(cols.float().mean() - (4 + 4 * math.cos(math.pi / 4))) < 0.6


def test_rotated_stream():
    train, test = pair(3, shape=(1, 8, 8))
    stream = rotated("toy", train, test, 5, seed=3)
    angles = rotation_angles(5, 3)
    assert all(0.0 <= a < 180.0 for a in angles) and len(set(angles)) == 5
    assert rotation_angles(3, 3) == angles[:3]  # experience k's angle depends on (seed, k) only
    assert [e.train.transform.degrees for e in stream] == angles
    assert stream.transform == "rotated" and stream.seed == 3 and stream.class_order is None
    x, _ = stream[2].train.batches(4).__next__()
    assert torch.equal(x, Rotation(angles[2])(train.images[:4]))


# ----------------------------------------------------------------------------------------------
# online


def test_online_hides_task_ids_and_keeps_data():
    train, test = pair()
    base = class_incremental("toy", train, test, 5, seed=2)
    stream = online(base)
    assert stream.scenario == "online" and [e.task_id for e in stream] == [None] * 5
    assert [e.index for e in stream] == list(range(5))
    assert stream.class_order == base.class_order and stream.seed == base.seed and stream.n_classes == 10
    for a, b in zip(stream, base, strict=True):
        assert a.train is b.train and a.test is b.test and a.classes == b.classes
    assert online(permuted("toy", train, test, 2, seed=1)).transform == "permuted"
    with pytest.raises(ValueError, match="already online"):
        online(stream)


# ----------------------------------------------------------------------------------------------
# reproducibility

DIGEST_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np, torch
    from protobench.continual.experience import permutation
    from protobench.continual.streams import class_incremental, online, permuted, rotated
    from protobench.fewshot.datasets import TensorSource

    def source(n, offset):
        labels = np.repeat(np.arange(6), n)[permutation(6 * n, 5)]
        images = (torch.arange(6 * n * 64, dtype=torch.float32).reshape(6 * n, 1, 8, 8) + offset) / 1e4
        return TensorSource(images, labels, [str(c) for c in range(6)])

    def digest():
        train, test = source(5, 0), source(2, 7)
        hasher = hashlib.sha256()
        for stream in (class_incremental("a", train, test, 3, seed=11), online(permuted("b", train, test, 2, seed=12)),
                       rotated("c", train, test, 2, seed=13)):
            hasher.update(repr(stream.spec()).encode())
            for experience in stream:
                for data in (experience.train, experience.test):
                    hasher.update(data.indices.numpy().tobytes())
                    for epoch in (0, 1):
                        for x, y in data.batches(4, key=99, epoch=epoch):
                            hasher.update(x.numpy().tobytes())
                            hasher.update(y.numpy().tobytes())
        return hasher.hexdigest()
""")


def stream_digest_here() -> str:
    namespace: dict = {}
    exec(DIGEST_SCRIPT, namespace)
    return namespace["digest"]()


def test_same_arguments_same_stream_in_another_process():
    here = stream_digest_here()
    assert stream_digest_here() == here
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    result = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT + "\nprint(digest())"], capture_output=True,
                            text=True, env=env, check=True, timeout=120, cwd=Path(__file__).parent)
    assert result.stdout.strip() == here


def test_batch_order_depends_only_on_the_key():
    train, test = pair()
    a = class_incremental("toy", train, test, 2, seed=4)[1].train
    b = class_incremental("toy", train, test, 2, class_order=permutation(10, 4).tolist())[1].train
    order = permutation(len(a), 77, 3)
    for data in (a, b):
        seen = torch.cat([x[:, 0, 0, 0] for x, _ in data.batches(7, key=77, epoch=3)])
        assert torch.equal(seen.long(), data.indices[torch.from_numpy(order)])  # row id = image value
    in_order = torch.cat([x[:, 0, 0, 0] for x, _ in a.batches(7)])
    assert torch.equal(in_order.long(), a.indices)
    other_epoch = torch.cat([x[:, 0, 0, 0] for x, _ in a.batches(7, key=77, epoch=4)])
    assert not torch.equal(other_epoch.long(), a.indices[torch.from_numpy(order)])


# ----------------------------------------------------------------------------------------------
# real data


def test_real_split_and_permuted_fashion_mnist():
    root = real_data_root("fashion-mnist") / "fashion-mnist"
    train, test = load_fashion_mnist(root, "train"), load_fashion_mnist(root, "test")
    stream = class_incremental("split-fashion-mnist", train, test, 5, seed=0)
    assert [len(e.train) for e in stream] == [12000] * 5 and [len(e.test) for e in stream] == [2000] * 5
    assert sorted(c for group in stream.class_order for c in group) == list(range(10))
    assert stream[0].train.images.data_ptr() == train.images.data_ptr()  # float32 on cpu: not copied
    shifted = permuted("permuted-fashion-mnist", train, test, 3, seed=0)
    x, y = shifted[2].test.take(torch.arange(3))
    assert y.tolist() == test.labels[:3].tolist()
    assert torch.equal(x.flatten(1).sort(dim=1).values, test.images[:3].flatten(1).sort(dim=1).values)
    assert not torch.equal(x, test.images[:3])


def test_real_omniglot_one_alphabet_per_experience():
    root = real_data_root("omniglot") / "omniglot"
    drawings = load_omniglot_alphabets(root, "test")  # drawers 15..19 stand in for both splits here
    groups = drawings.alphabet_groups()
    stream = from_groups("omniglot-alphabets", drawings, drawings, groups)
    assert len(stream) == 50 and stream.n_classes == 1623
    assert [len(e.train) for e in stream] == [5 * len(group) for group in groups]
    assert stream.class_order[0] == tuple(range(len(groups[0])))  # the first alphabet: the first ids
    _, labels = stream[49].test.tensors()
    assert set(labels.tolist()) == set(stream[49].classes)
    assert {drawings.alphabets[c] for c in stream.class_order[49]} == {49}
