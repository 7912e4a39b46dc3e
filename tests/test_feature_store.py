"""The on-disk feature store behind FeatureCache: reuse across caches, fingerprints of weights and
preprocessing, stale and corrupt shards detected and rebuilt, never silently used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from protobench.fewshot.encoders import FeatureCache
from protobench.fewshot.feature_store import FeatureStore, encoder_fingerprint, image_list_digest


class CountingEncoder:
    """A linear image encoder that counts the images it encodes."""

    feature_dim = 4

    def __init__(self, seed: int = 0, preprocessing: str = "none") -> None:
        generator = torch.Generator().manual_seed(seed)
        self.linear = torch.nn.Linear(3 * 2 * 2, self.feature_dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=generator))
            self.linear.bias.zero_()
        self.name = "counting"
        self.preprocessing = preprocessing
        self.calls = 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += len(images)
        with torch.no_grad():
            return F.normalize(self.linear(images.flatten(1)), dim=-1)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed))


def shards(directory) -> list:
    return sorted(directory.rglob("*.safetensors"))


def test_a_second_cache_reads_the_first_ones_features_without_encoding(tmp_path):
    x = images(10)
    first = CountingEncoder()
    expected = FeatureCache(tmp_path).encode(first, x)
    assert first.calls == 10 and len(shards(tmp_path)) == 1
    second = CountingEncoder()  # same weights, a different object: the fingerprint matches
    cache = FeatureCache(tmp_path)
    got = cache.encode(second, x[[3, 1, 7]])
    assert second.calls == 0 and cache.encoded == 0
    assert torch.equal(got, expected[[3, 1, 7]])
    assert not list(tmp_path.rglob("*.partial"))


def test_only_new_images_are_encoded_and_stored_as_a_new_shard(tmp_path):
    encoder, cache = CountingEncoder(), FeatureCache(tmp_path)
    cache.encode(encoder, images(6))
    both = torch.cat([images(6)[:2], images(3, seed=1)])
    cache.encode(encoder, both)
    assert encoder.calls == 9 and len(shards(tmp_path)) == 2


def test_an_image_repeated_in_a_batch_is_encoded_once(tmp_path):
    encoder, x = CountingEncoder(), images(2)
    got = FeatureCache(tmp_path).encode(encoder, torch.stack([x[0], x[1], x[0]]))
    assert encoder.calls == 2 and torch.equal(got[0], got[2])


def test_the_fingerprint_follows_weights_preprocessing_and_name():
    base = encoder_fingerprint(CountingEncoder())
    assert encoder_fingerprint(CountingEncoder()) == base
    assert encoder_fingerprint(CountingEncoder(seed=1)) != base
    assert encoder_fingerprint(CountingEncoder(preprocessing="resize 8")) != base
    renamed = CountingEncoder()
    renamed.name = "other"
    assert encoder_fingerprint(renamed) != base


def test_changed_weights_are_encoded_again_not_read_from_the_old_shard(tmp_path):
    x = images(5)
    FeatureCache(tmp_path).encode(CountingEncoder(), x)
    changed = CountingEncoder(seed=1)
    got = FeatureCache(tmp_path).encode(changed, x)
    assert changed.calls == 5
    assert torch.allclose(got, CountingEncoder(seed=1).encode_images(x))


def test_a_corrupted_shard_is_deleted_with_a_warning_and_rebuilt(tmp_path):
    x = images(8)
    expected = FeatureCache(tmp_path).encode(CountingEncoder(), x)
    (path,) = shards(tmp_path)
    tensors = load_file(path)
    tensors["features"][2, 1] += 0.5  # the bytes change, the stored checksum does not
    with safe_open(path, framework="pt") as shard:  # keep the original metadata
        metadata = shard.metadata()
    save_file(tensors, path, metadata=metadata)
    encoder = CountingEncoder()
    with pytest.warns(UserWarning, match="features do not match their checksum"):
        got = FeatureCache(tmp_path).encode(encoder, x)
    assert encoder.calls == 8 and torch.equal(got, expected)
    assert len(shards(tmp_path)) == 1  # the rebuilt one


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(path.read_bytes()[:40]), "unreadable"),
    (lambda path: path.write_bytes(b"\x00" * 64), "unreadable"),
    (lambda path: path.rename(path.with_name("0" * 64 + ".safetensors")), "image list does not hash to its name"),
])
def test_truncated_garbage_and_misnamed_shards_are_never_used(tmp_path, damage, message):
    x = images(4)
    FeatureCache(tmp_path).encode(CountingEncoder(), x)
    damage(shards(tmp_path)[0])
    encoder = CountingEncoder()
    with pytest.warns(UserWarning, match=message):
        FeatureCache(tmp_path).encode(encoder, x)
    assert encoder.calls == 4


def test_a_shard_of_another_encoder_in_the_folder_is_stale(tmp_path):
    x = images(3)
    other = CountingEncoder(seed=2)
    store = FeatureStore(tmp_path)
    digests = [FeatureCache.digest(image) for image in x]
    fingerprint = encoder_fingerprint(CountingEncoder())
    path = store.save(encoder_fingerprint(other), "counting", digests, other.encode_images(x))
    moved = store.folder(fingerprint) / path.name
    moved.parent.mkdir(parents=True)
    path.rename(moved)
    assert moved.stem == image_list_digest(digests)
    with pytest.warns(UserWarning, match="stale"):
        assert store.load(fingerprint) == {}
    assert not moved.exists()


def test_an_encoder_without_weights_or_fingerprint_is_kept_in_memory_only(tmp_path):
    class Opaque:
        name, feature_dim = "opaque", 12

        def encode_images(self, x: torch.Tensor) -> torch.Tensor:
            return F.normalize(x.flatten(1), dim=-1)

    x = images(2)
    with pytest.warns(UserWarning, match="fingerprint.*memory only"):
        assert FeatureCache(tmp_path).encode(Opaque(), x).shape == (2, 12)
    assert shards(tmp_path) == []
    opaque = Opaque()
    opaque.fingerprint = "opaque-v1"
    assert FeatureCache(tmp_path).encode(opaque, x).shape == (2, 12)
    assert len(shards(tmp_path)) == 1


def test_a_folder_named_like_a_shard_is_left_alone(tmp_path):
    x = images(2)
    encoder = CountingEncoder()
    FeatureStore(tmp_path).folder(encoder_fingerprint(encoder)).joinpath("odd.safetensors").mkdir(parents=True)
    assert FeatureCache(tmp_path).encode(encoder, x).shape == (2, 4) and encoder.calls == 2
