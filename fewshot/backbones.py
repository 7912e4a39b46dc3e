"""Feature extractors."""

from __future__ import annotations

from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU, 2x2 max-pool (Vinyals et al. 2016; Snell et al. 2017)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Sequential):
    """Four conv blocks of ``width`` filters, flattened: 64-d on 28x28, 1600-d on 84x84."""

    def __init__(self, in_channels: int = 1, width: int = 64) -> None:
        super().__init__(
            conv_block(in_channels, width),
            conv_block(width, width),
            conv_block(width, width),
            conv_block(width, width),
            nn.Flatten(),
        )
        self.in_channels = in_channels
        self.width = width
