"""Feature extractors for the continual baselines; a learner puts a linear head on top.

- :class:`MLP`: flatten, then two fully connected layers of 400 ReLU units, the network of the
  Split/Permuted-MNIST experiments of van de Ven, Tuytelaars and Tolias (2022, "Three types of
  incremental learning") and many continual papers after them. 474,400 parameters on
  (1, 28, 28) inputs (Fashion-MNIST).
- :class:`SmallCNN`: two 3x3 convolutions (32 and 64 filters, ReLU, 2x2 max-pool each) and a
  fully connected layer of 256 ReLU units. 821,888 parameters on (1, 28, 28) inputs.
- :class:`ReducedResNet18`: the ResNet-18 with ``nf = 20`` base filters of Lopez-Paz and Ranzato
  (2017, GEM), used for Split CIFAR in continual papers: a 3x3 stride-1 first convolution (no
  max-pool), four stages of two :class:`BasicBlock` (20, 40, 80, 160 filters; stride 1, 2, 2, 2),
  global average pooling to 160 features. 1,093,140 parameters on (3, 32, 32) inputs (the
  parameter count does not depend on the image size). GEM pools with ``avg_pool2d(out, 4)``,
  which is the global average on 32x32 inputs; this module pools globally on any size.

Every backbone maps (n, C, H, W) float images to (n, ``out_features``) features and draws its
initial weights from PyTorch's default initialisation (the global generator: the runner seeds it,
inside ``torch.random.fork_rng``, with the unit's ``init`` key before building a learner).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("mlp", "cnn", "resnet18-reduced")


class MLP(nn.Module):
    """Flatten, Linear(C*H*W, 400), ReLU, Linear(400, 400), ReLU: 400 features.

    Parameters: (C*H*W + 1) * 400 + 401 * 400; 474,400 on (1, 28, 28).
    """

    def __init__(self, input_shape: tuple[int, ...], hidden: int = 400) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SmallCNN(nn.Module):
    """Conv3x3(C, 32), ReLU, MaxPool2, Conv3x3(32, 64), ReLU, MaxPool2, flatten,
    Linear(64 * (H // 4) * (W // 4), 256), ReLU: 256 features.

    Parameters: 9C*32 + 32 + 9*32*64 + 64 + (64 * (H // 4) * (W // 4) + 1) * 256; 821,888 on (1, 28, 28).
    """

    def __init__(self, input_shape: tuple[int, ...], hidden: int = 256) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.layers = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), hidden),
            nn.ReLU(),
        )
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU, conv3x3-BN, plus the shortcut, ReLU. The shortcut is
    the identity, or a 1x1 convolution (no bias) and BN when the stride or the width changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ReducedResNet18(nn.Module):
    """GEM's reduced ResNet-18 (Lopez-Paz and Ranzato 2017): ``8 * nf`` features (160 for nf = 20).

    Parameters (nf = 20, 3 input channels): 1,093,140, that is 540 + 40 for the first convolution
    and its BN, then 14,560, 51,600, 205,600 and 820,800 for the four stages.
    """

    def __init__(self, input_shape: tuple[int, ...], nf: int = 20) -> None:
        super().__init__()
        self.conv1 = conv3x3(input_shape[0], nf)
        self.bn1 = nn.BatchNorm2d(nf)
        widths = (nf, 2 * nf, 4 * nf, 8 * nf)
        stages, in_channels = [], nf
        for width, stride in zip(widths, (1, 2, 2, 2), strict=True):
            stages.append(nn.Sequential(BasicBlock(in_channels, width, stride), BasicBlock(width, width)))
            in_channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def build_backbone(name: str, input_shape: tuple[int, ...]) -> nn.Module:
    """The backbone called ``name`` (one of :data:`BACKBONES`) for (C, H, W) inputs ``input_shape``;
    it has an ``out_features`` attribute. ValueError naming the choices for an unknown name."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    if name == "mlp":
        return MLP(input_shape)
    if name == "cnn":
        return SmallCNN(input_shape)
    if name == "resnet18-reduced":
        return ReducedResNet18(input_shape)
    raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
