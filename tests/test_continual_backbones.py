"""Continual backbones: parameter counts counted independently from the papers' architectures,
feature sizes, GEM's pooling, and the error for an unknown name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from protobench.continual import backbones
from protobench.continual.backbones import BACKBONES, MLP, ReducedResNet18, SmallCNN, build_backbone

pytestmark = pytest.mark.usefixtures("seeded_one_thread")


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv(k: int, c_in: int, c_out: int, bias: bool) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def batch_norm(c: int) -> int:
    return 2 * c  # weight and bias (running statistics are buffers)


def gem_resnet18_count(c_in: int, nf: int = 20) -> int:
    """GEM's ResNet18(nf): conv3x3 + BN, then [2, 2, 2, 2] basic blocks of nf, 2nf, 4nf, 8nf filters with
    strides 1, 2, 2, 2; a 1x1 conv + BN shortcut where the stride or width changes; no head."""
    total = conv(3, c_in, nf, False) + batch_norm(nf)
    channels = nf
    for width, stride in ((nf, 1), (2 * nf, 2), (4 * nf, 2), (8 * nf, 2)):
        for block_stride in (stride, 1):
            total += conv(3, channels, width, False) + batch_norm(width)
            total += conv(3, width, width, False) + batch_norm(width)
            if block_stride != 1 or channels != width:
                total += conv(1, channels, width, False) + batch_norm(width)
            channels = width
    return total


@pytest.mark.parametrize(("name", "shape", "expected", "features"), [
    ("mlp", (1, 28, 28), linear(784, 400) + linear(400, 400), 400),
    ("cnn", (1, 28, 28), conv(3, 1, 32, True) + conv(3, 32, 64, True) + linear(64 * 7 * 7, 256), 256),
    ("cnn", (3, 32, 32), conv(3, 3, 32, True) + conv(3, 32, 64, True) + linear(64 * 8 * 8, 256), 256),
    ("resnet18-reduced", (3, 32, 32), gem_resnet18_count(3), 160),
])
def test_parameter_counts_and_feature_sizes(name, shape, expected, features):
    model = build_backbone(name, shape)
    assert n_parameters(model) == expected
    assert model.out_features == features
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    assert model.eval()(x).shape == (2, features)


def test_documented_counts_are_the_real_ones():
    documented = {MLP: ((1, 28, 28), "474,400"), SmallCNN: ((1, 28, 28), "821,888"),
                  ReducedResNet18: ((3, 32, 32), "1,093,140")}
    for cls, (shape, text) in documented.items():
        assert f"{n_parameters(cls(shape)):,}" == text
        assert text in backbones.__doc__ and text in cls.__doc__


def test_reduced_resnet_is_gems():
    model = ReducedResNet18((3, 32, 32)).eval()
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    widths = [stage[0].conv1.out_channels for stage in (model.layer1, model.layer2, model.layer3, model.layer4)]
    assert widths == [20, 40, 80, 160]
    assert all(isinstance(stage[0].bn1, torch.nn.BatchNorm2d) for stage in (model.layer1, model.layer4))
    # GEM pools with avg_pool2d(out, 4): on 32x32 inputs that is the global average this module takes
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = F.relu(model.bn1(model.conv1(x)))
    out = model.layer4(model.layer3(model.layer2(model.layer1(out))))
    assert out.shape[-2:] == (4, 4)
    torch.testing.assert_close(model(x), F.avg_pool2d(out, 4).flatten(1))


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'.*mlp, cnn, resnet18-reduced"):
        build_backbone("resnet50", (3, 32, 32))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_backbone("mlp", (784,))
    assert BACKBONES == ("mlp", "cnn", "resnet18-reduced")
