"""Nearest class mean: logits equal a hand computation (Euclidean and cosine) on a toy stream with the
identity as backbone, unseen classes are never predicted, recurring classes average over all their
examples, the state round trip gives identical predictions (also for a random Conv-4), and the
pretrained backbone is wired in."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from test_pretrained import require_pretrained
from torch import nn

from protobench.continual.experience import Experience, ExperienceData
from protobench.continual.learner import ContinualContext, ContinualLearner
from protobench.continual.learners.ncm import FeatureCache, NearestClassMean

SHAPE = (1, 2, 2)  # four pixels: the identity backbone's features are the pixels


def toy_images(n: int, offset: float) -> torch.Tensor:
    """Distinct, deterministic images (n, 1, 2, 2)."""
    values = torch.arange(n * 4, dtype=torch.float32).reshape(n, *SHAPE)
    return torch.sin(values * 1.7 + offset)


def experience(index: int, images: torch.Tensor, labels: list[int], test: torch.Tensor) -> Experience:
    labels_tensor = torch.tensor(labels)
    train = ExperienceData(images, labels_tensor, torch.arange(len(labels)))
    test_data = ExperienceData(test, torch.zeros(len(test), dtype=torch.int64), torch.arange(len(test)))
    return Experience(index, index, tuple(sorted(set(labels))), train, test_data)


def context(index: int) -> ContinualContext:
    return ContinualContext(device="cpu", seed=0, experience_index=index, progress=False)


def learner(**params) -> NearestClassMean:
    return NearestClassMean(SHAPE, "cpu", 4, backbone=nn.Flatten(), batch_size=3, **params)


def hand_logits(train: list[tuple[np.ndarray, int]], queries: np.ndarray, n_classes: int,
                cosine: bool = False) -> np.ndarray:
    """Class means from (feature, label) pairs, then -squared distance (or cosine); -inf where unseen."""
    logits = np.full((len(queries), n_classes), -np.inf)
    for k in range(n_classes):
        members = [f / np.linalg.norm(f) if cosine else f for f, label in train if label == k]
        if not members:
            continue
        mean = np.mean(members, axis=0)
        for i, q in enumerate(queries):
            if cosine:
                logits[i, k] = q @ mean / (np.linalg.norm(q) * np.linalg.norm(mean))
            else:
                logits[i, k] = -np.sum((q - mean) ** 2)
    return logits


def pairs(images: torch.Tensor, labels: list[int]) -> list[tuple[np.ndarray, int]]:
    return [(image.reshape(-1).double().numpy(), label) for image, label in zip(images, labels, strict=True)]


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_class_incremental_logits_equal_hand_computation(distance):
    first, second, queries = toy_images(7, 0.0), toy_images(5, 1.0), toy_images(6, 2.0)
    first_labels, second_labels = [0, 1, 0, 1, 1, 0, 0], [2, 3, 3, 2, 3]
    ncm = learner(distance=distance)
    assert isinstance(ncm, ContinualLearner)
    record = ncm.train_experience(experience(0, first, first_labels, queries), context(0))
    assert record["examples"] == 7 and record["classes"] == [0, 1]
    cosine = distance == "cosine"
    expected = hand_logits(pairs(first, first_labels), queries.reshape(6, -1).double().numpy(), 4, cosine)
    logits = ncm.predict(queries)
    assert logits.shape == (6, 4)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert set(logits.argmax(1).tolist()) <= {0, 1}  # classes 2 and 3 unseen: never predicted
    ncm.train_experience(experience(1, second, second_labels, queries), context(1))
    seen = pairs(first, first_labels) + pairs(second, second_labels)
    expected = hand_logits(seen, queries.reshape(6, -1).double().numpy(), 4, cosine)
    np.testing.assert_allclose(ncm.predict(queries).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_recurring_classes_average_over_every_experience():
    """Domain-incremental: classes 0 and 1 in both experiences; the mean is over all 9 examples."""
    first, second, queries = toy_images(4, 0.0), toy_images(5, 3.0), toy_images(3, 5.0)
    first_labels, second_labels = [0, 1, 1, 0], [1, 0, 0, 0, 1]
    ncm = learner()
    ncm.train_experience(experience(0, first, first_labels, queries), context(0))
    ncm.train_experience(experience(1, second, second_labels, queries), context(1))
    assert ncm.counts.tolist() == [5, 4, 0, 0]
    expected = hand_logits(pairs(first, first_labels) + pairs(second, second_labels),
                           queries.reshape(3, -1).double().numpy(), 4)
    np.testing.assert_allclose(ncm.predict(queries).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_nothing_seen_gives_minus_infinity_everywhere():
    logits = learner().predict(toy_images(3, 0.0))
    assert logits.shape == (3, 4) and bool(torch.all(logits == -math.inf))


def test_a_new_input_is_not_served_old_features():
    """The feature cache is keyed by content: same shape, other values, other logits."""
    train, a, b = toy_images(6, 0.0), toy_images(3, 1.0), toy_images(3, 4.0)
    labels = [0, 1, 2, 0, 1, 2]
    ncm = learner()
    ncm.train_experience(experience(0, train, labels, a), context(0))
    first_a, logits_b, again_a = ncm.predict(a), ncm.predict(b), ncm.predict(a)
    expected_b = hand_logits(pairs(train, labels), b.reshape(3, -1).double().numpy(), 4)
    np.testing.assert_allclose(logits_b.numpy(), expected_b, rtol=1e-5, atol=1e-5)
    assert torch.equal(first_a, again_a)


def test_feature_cache_drops_the_oldest_entries():
    cache = FeatureCache(max_bytes=2 * 4 * 4)  # room for two (1, 4) float32 rows
    keys = [FeatureCache.key(torch.full((1,), float(i))) for i in range(3)]
    for i, key in enumerate(keys):
        cache.put(key, torch.full((1, 4), float(i)))
    assert cache.get(keys[0]) is None
    assert cache.get(keys[1]).tolist() == [[1.0] * 4] and cache.get(keys[2]).tolist() == [[2.0] * 4]


def test_labels_outside_the_stream_are_refused():
    ncm = learner()
    with pytest.raises(ValueError, match=r"0\.\.3"):
        ncm.train_experience(experience(0, toy_images(2, 0.0), [0, 4], toy_images(1, 0.0)), context(0))


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_state_round_trip_gives_identical_predictions():
    train, queries = toy_images(8, 0.0), toy_images(5, 2.0)
    labels = [0, 1, 2, 0, 1, 2, 2, 0]
    ncm = learner(distance="cosine")
    ncm.train_experience(experience(0, train, labels, queries), context(0))
    restored = learner(distance="cosine")
    restored.load_state_dict(round_trip(ncm.state_dict()))
    assert torch.equal(restored.predict(queries), ncm.predict(queries))
    with pytest.raises(ValueError, match="distance"):
        learner(distance="euclidean").load_state_dict(ncm.state_dict())


def test_random_conv4_state_restores_the_backbone():
    """A randomly initialised Conv-4 has no named source: its weights travel in the state."""
    shape = (1, 16, 16)
    images = torch.rand(6, *shape, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ncm = NearestClassMean(shape, "cpu", 3, backbone="conv4")
        torch.manual_seed(1)
        restored = NearestClassMean(shape, "cpu", 3, backbone="conv4")
    assert ncm.pretraining is None and ncm.backbone_name == "conv4"
    ncm.train_experience(experience(0, images, [0, 1, 2, 0, 1, 2], images), context(0))
    assert not torch.equal(restored._features(images), ncm._features(images))
    restored.load_state_dict(round_trip(ncm.state_dict()))
    assert torch.equal(restored.predict(images), ncm.predict(images))


def test_conv4_weights_file_names_the_pretraining(tmp_path):
    shape = (3, 16, 16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        source = NearestClassMean(shape, "cpu", 2, backbone="conv4")
    path = tmp_path / "conv4.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = NearestClassMean(shape, "cpu", 2, backbone="conv4", weights=path)
    assert loaded.pretraining.startswith("conv4.pt sha256:")
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded._features(x), source._features(x))
    assert "backbone_state" not in loaded.state_dict()


def test_efficientnet_backbone_is_pretrained_and_takes_grey_images():
    require_pretrained()
    ncm = NearestClassMean((1, 28, 28), "cpu", 10, resolution=32)
    assert (ncm.backbone_name, ncm.pretraining, ncm.feature_dim) == ("efficientnet-lite0", "imagenet-1k", 1280)
    assert "backbone_state" not in ncm.state_dict()
    grey = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert ncm._features(grey).shape == (2, 1280)
