"""Proto-CLIP (Palanisamy et al., "Proto-CLIP: Vision-Language Prototypical Network for Few-Shot
Learning", IROS 2024), following the authors' code (IRVLUTD/Proto-CLIP), on any encoder pair of
:mod:`protobench.fewshot.encoders`.

Memories, for N classes with K_c support images each:

- the visual memory holds one entry per support image, the mean of its features over ``n_augment``
  (10) augmented passes (random resized crop, scale 0.5-1, and horizontal flip, drawn from an
  explicit generator), re-normalised (:func:`visual_memory`); a class's image prototype is the
  re-normalised mean of its normalised entries (:func:`class_prototypes`);
- the text memory holds one row per class: the class name's prompt features averaged over the
  templates and normalised (:func:`text_memory`); the rows are the text prototypes.

A query q (normalised; in Proto-CLIP-F first passed through the adapter and re-normalised, the
memories never are) gets (:func:`proto_clip_probabilities`)::

    p = alpha * softmax(-beta * ||q - c_img||^2) + (1 - alpha) * softmax(-beta * ||q - c_txt||^2)

Proto-CLIP is training-free (fixed memories, no adapter). Proto-CLIP-F (:func:`fine_tune`) trains
the visual memory, the adapter and optionally the text memory with ``NLL(log p) + InfoNCE(image
prototypes -> text prototypes) + InfoNCE(text -> image)``, weights 1:1:1, InfoNCE on cosine
similarity at temperature 0.1 with the other classes' prototypes as negatives; AdamW (lr 1e-4,
eps 1e-4, weight decay 0.05). Schedule, as in the code: each epoch visits the classes in a random
order, in episodes of ``round_down(0.2 N)`` (at least 1) to ``round_down(0.4 N) - 1`` classes (at
least the lower bound); for each class of an episode a random number n of its K_c entries
(1 <= n < K_c) is set aside and the other K_c - n entries of the *fixed* initial visual memory are
the queries (the single entry when K_c = 1); every episode scores them against all N classes and
takes one optimiser step. The learning rate follows a cosine annealing with period
``n_epochs * S`` (S memory entries) stepped once per epoch, as the code does (so it barely
decays). The code's defaults are 2000 epochs, alpha and beta fixed per dataset during training.

:func:`search_alpha_beta` picks (alpha, beta) on validation features by the code's grid (alpha
0, 0.1, ..., 1; beta 0.1, ..., 0.9, 1, 2, ..., 20; first best in alpha-major order).
:func:`episode_log_probabilities` scores many episodes at once from cached features (training-free).

Use, with any encoder pair of :mod:`protobench.fewshot.encoders` (here a CLIP)::

    encoder = OpenCLIPEncoder.create("RN50", pretrained="openai")
    memory = visual_memory(encoder, support_images, torch.Generator().manual_seed(key))
    model = ProtoCLIPModel(memory, support_labels, text_memory(encoder, class_names, IMAGENET_TEMPLATES),
                           adapter="conv-3x")
    fine_tune(model, alpha=0.5, beta=5.0, n_epochs=2000, generator=torch.Generator().manual_seed(key2))
    found = search_alpha_beta(model.adapt(val_features), val_labels, model.image_prototypes(),
                              model.text_prototypes())
    p = model(query_features, found.alpha, found.beta)

Departures from the code: conv adapters are built without the code's unused 3x3 layer in
``conv-2x``; everything runs in float32 (the code's adapter is float16); the visual memory averages
the encoder's normalised features over the augmented passes (the code averages raw CLIP features);
augmented crops are resized back to the image's own size and the encoder resizes them to its input
(the code crops straight to 224 pixels); every class, the last included, supplies queries in each
epoch (the code never draws class N-1); the model kept is the last epoch's, or the best on given
validation features (the code keeps the best epoch on its validation split).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protobench.fewshot.encoders import ImageEncoder, TextEncoder
from protobench.fewshot.feature_store import encoder_fingerprint, image_digest

ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
BETAS = tuple(round(0.1 * i, 1) for i in range(1, 10)) + tuple(float(b) for b in range(1, 21))
ADAPTERS = ("conv-2x", "conv-3x", "fc")
DEFAULT_TEMPLATES = ("a photo of a {}.",)
# The ImageNet prompt ensemble of the code (after Tip-Adapter).
IMAGENET_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                      "a {} in a video game.", "art of the {}.", "a photo of the small {}.")
TEMPERATURE = 0.1
N_AUGMENT = 10


def augment_crop_flip(images: torch.Tensor, generator: torch.Generator, *, scale: tuple[float, float] = (0.5, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Each image (n, C, H, W) in [0, 1] randomly cropped and flipped, at its own size.

    The crop follows torchvision's ``RandomResizedCrop`` (area fraction uniform in ``scale``, log
    aspect ratio uniform in ``ratio``, 10 tries, else the centre crop), resized back to (H, W)
    (bicubic, antialiased, clamped to [0, 1]); then a horizontal flip with probability 1/2. All
    randomness comes from ``generator`` (on the CPU).
    """
    if images.dim() != 4:
        raise ValueError(f"expected images (n, C, H, W), got shape {tuple(images.shape)}")
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
    height, width = images.shape[-2:]
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    def randint(high: int) -> int:
        return int(torch.randint(high, (), generator=generator).item())

    out = []
    for image in images:
        for _ in range(10):
            area = height * width * uniform(*scale)
            aspect = math.exp(uniform(*log_ratio))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = randint(height - h + 1), randint(width - w + 1)
                break
        else:
            w, h = width, height
            if width / height < ratio[0]:
                h = round(width / ratio[0])
            elif width / height > ratio[1]:
                w = round(height * ratio[1])
            top, left = (height - h) // 2, (width - w) // 2
        crop = image[None, :, top:top + h, left:left + w].float()
        if (h, w) != (height, width):
            crop = F.interpolate(crop, size=(height, width), mode="bicubic", align_corners=False,
                                 antialias=True).clamp(0, 1)
        if torch.rand((), generator=generator).item() < 0.5:
            crop = crop.flip(-1)
        out.append(crop[0])
    return torch.stack(out)


class AugmentedViewEncoder:
    """An :class:`~protobench.fewshot.encoders.ImageEncoder` that encodes augmented view ``view`` of each
    image: :func:`augment_crop_flip` (``scale``) with a generator seeded from the image's own digest,
    ``view`` and ``seed``, then ``base``.

    The view of an image is the same whatever batch it comes in, so a
    :class:`~protobench.fewshot.encoders.FeatureCache` can keep it like any other feature; the
    ``fingerprint`` (for a store on disk) covers ``base``'s and the augmentation's settings.
    """

    def __init__(self, base: ImageEncoder, view: int, *, seed: int = 0,
                 scale: tuple[float, float] = (0.5, 1.0)) -> None:
        if isinstance(view, bool) or not isinstance(view, int) or view < 0:
            raise ValueError(f"view must be a non-negative integer, got {view!r}")
        self.base, self.view, self.seed, self.scale = base, view, int(seed), tuple(scale)
        self.name = f"{base.name}+crop-flip-view{view}"
        self.feature_dim = base.feature_dim

    @property
    def augmentation(self) -> str:
        """The augmentation's settings, as the fingerprint records them."""
        return f"crop-flip scale {self.scale[0]:g}-{self.scale[1]:g}, view {self.view}, seed {self.seed}"

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 (hex) of ``base``'s fingerprint and :attr:`augmentation`."""
        return hashlib.sha256(f"{encoder_fingerprint(self.base)}\0{self.augmentation}".encode()).hexdigest()

    def image_generator(self, image: torch.Tensor) -> torch.Generator:
        """The generator of one image's view: seeded from its digest, ``view`` and ``seed``."""
        key = hashlib.sha256(f"{image_digest(image)}:{self.view}:{self.seed}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``base``'s features (n, feature_dim) of each image's view."""
        views = torch.cat([augment_crop_flip(image[None], self.image_generator(image), scale=self.scale)
                           for image in images])
        return self.base.encode_images(views)


def visual_memory(encoder: ImageEncoder, images: torch.Tensor, generator: torch.Generator, *,
                  n_augment: int = N_AUGMENT, scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """One normalised entry (n, d) per support image: its features averaged over ``n_augment``
    augmented passes (:func:`augment_crop_flip` with ``generator``), re-normalised."""
    if isinstance(n_augment, bool) or not isinstance(n_augment, int) or n_augment < 1:
        raise ValueError(f"n_augment must be a positive integer, got {n_augment!r}")
    total = sum(encoder.encode_images(augment_crop_flip(images, generator, scale=scale)).float()
                for _ in range(n_augment))
    return F.normalize(total / n_augment, dim=-1)


def text_memory(encoder: TextEncoder, class_names: Sequence[str],
                templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """One normalised row (N, d) per class: the normalised features of ``template.format(name)``
    (underscores in names read as spaces) averaged over ``templates``, re-normalised."""
    if isinstance(class_names, str) or not class_names or not templates:
        raise ValueError("need a non-empty sequence of class names and at least one template")
    if any("{}" not in template for template in templates):
        raise ValueError(f"every template needs one '{{}}' for the class name, got {list(templates)}")
    names = [name.replace("_", " ") for name in class_names]
    prompts = [template.format(name) for name in names for template in templates]
    features = F.normalize(encoder.encode_texts(prompts).float(), dim=-1).view(len(names), len(templates), -1)
    return F.normalize(features.mean(1), dim=-1)


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Re-normalised means of the normalised entries of each class.

    features (..., S, d), labels (S,) or (..., S) in 0..n_way-1 -> (..., n_way, d). ValueError when
    a class has no entry.
    """
    one_hot = F.one_hot(labels.long().to(features.device), n_way).to(features.dtype)
    counts = one_hot.sum(-2)
    if (counts == 0).any():
        raise ValueError(f"every class 0..{n_way - 1} needs at least one entry; class counts {counts.tolist()}")
    if one_hot.dim() < features.dim():
        one_hot = one_hot.expand(*features.shape[:-2], -1, -1)
    sums = one_hot.transpose(-1, -2) @ F.normalize(features, dim=-1)
    return F.normalize(sums / counts.unsqueeze(-1), dim=-1)


def squared_distances(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """||q - c||^2 for query (..., Q, d) and prototypes (..., N, d) -> (..., Q, N), never negative."""
    cross = query @ prototypes.transpose(-1, -2)
    return ((query * query).sum(-1, keepdim=True) + (prototypes * prototypes).sum(-1).unsqueeze(-2)
            - 2 * cross).clamp_min(0)


def proto_clip_probabilities(query: torch.Tensor, image_prototypes: torch.Tensor, text_prototypes: torch.Tensor,
                             alpha: float, beta: float) -> torch.Tensor:
    """p (..., Q, N) = alpha * softmax(-beta d_img) + (1 - alpha) * softmax(-beta d_txt), d squared Euclidean.

    The vectors are used as given (Proto-CLIP passes normalised ones); rows of p sum to 1.
    """
    if not 0 <= alpha <= 1 or not beta > 0:
        raise ValueError(f"need 0 <= alpha <= 1 and beta > 0, got alpha={alpha!r}, beta={beta!r}")
    p_image = F.softmax(-beta * squared_distances(query, image_prototypes), dim=-1)
    p_text = F.softmax(-beta * squared_distances(query, text_prototypes), dim=-1)
    return alpha * p_image + (1 - alpha) * p_text


def log_probabilities(p: torch.Tensor) -> torch.Tensor:
    """log p, with p clamped below at the smallest normal float of its dtype (never -inf)."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def episode_log_probabilities(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                              text_prototypes: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Training-free Proto-CLIP logits (log p) for episodes from their features.

    support (B, S, d), support_labels (S,) or (B, S) in 0..N-1, query (B, Q, d), text_prototypes
    (B, N, d) or (N, d) -> (B, Q, N). Every vector is normalised first; image prototypes are the
    support's :func:`class_prototypes`.
    """
    n_way = text_prototypes.shape[-2]
    image = class_prototypes(support, support_labels, n_way)
    text = F.normalize(text_prototypes, dim=-1).to(image.dtype)
    return log_probabilities(proto_clip_probabilities(F.normalize(query, dim=-1), image, text, alpha, beta))


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """InfoNCE: row i of ``queries`` (N, d) against key i (positive) and the other keys (negatives).

    Cross-entropy of cosine similarities / ``temperature`` with target i for row i, averaged over
    rows (as the ``info_nce`` package does without explicit negatives).
    """
    if queries.shape != keys.shape or queries.dim() != 2:
        raise ValueError(f"need queries and keys of the same shape (N, d), got {tuple(queries.shape)} and "
                         f"{tuple(keys.shape)}")
    logits = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


@dataclass(frozen=True)
class LossTerms:
    """Proto-CLIP's loss: ``total`` = weighted ``nll`` + ``image_to_text`` + ``text_to_image`` (scalars)."""

    total: torch.Tensor
    nll: torch.Tensor
    image_to_text: torch.Tensor
    text_to_image: torch.Tensor


def proto_clip_loss(p: torch.Tensor, labels: torch.Tensor, image_prototypes: torch.Tensor,
                    text_prototypes: torch.Tensor, *, temperature: float = TEMPERATURE,
                    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> LossTerms:
    """NLL of log p (Q, N) against ``labels`` (Q,), plus InfoNCE image -> text and text -> image
    prototypes (N, d), weighted by ``weights``."""
    nll = F.nll_loss(log_probabilities(p), labels.long())
    image_to_text = info_nce(image_prototypes, text_prototypes, temperature)
    text_to_image = info_nce(text_prototypes, image_prototypes, temperature)
    total = weights[0] * nll + weights[1] * image_to_text + weights[2] * text_to_image
    return LossTerms(total, nll, image_to_text, text_to_image)


class ConvAdapter(nn.Module):
    """The code's conv adapter: a d-vector zero-padded to an s x s image (s = ceil(sqrt(d))), then
    1x1 conv 1->width, LayerNorm, [conv-3x: 3x3 conv width->width (padding 1), LayerNorm,]
    1x1 conv width->1, LayerNorm, plus the padded input; cropped back to d. Convolutions have no
    bias and there is no activation (the code defines a ReLU but never applies it); the LayerNorms
    normalise over (channels, s, s) with elementwise affine parameters."""

    def __init__(self, dim: int, *, layers: int = 3, width: int = 16) -> None:
        super().__init__()
        if layers not in (2, 3) or dim < 1 or width < 1:
            raise ValueError(f"need layers 2 or 3 and positive dim and width, got {layers}, {dim}, {width}")
        self.dim, self.side = dim, math.ceil(math.sqrt(dim))
        s = self.side
        blocks = [nn.Conv2d(1, width, 1, bias=False), nn.LayerNorm([width, s, s])]
        if layers == 3:
            blocks += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.LayerNorm([width, s, s])]
        blocks += [nn.Conv2d(width, 1, 1, bias=False), nn.LayerNorm([1, s, s])]
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, dim) -> (n, dim)."""
        square = F.pad(x, (0, self.side ** 2 - self.dim)).view(-1, 1, self.side, self.side)
        return (self.body(square) + square).flatten(1)[:, :self.dim]


class FCAdapter(nn.Module):
    """The code's fc adapter: ``ratio * LN(W2 LN(W1 x)) + (1 - ratio) * x``, W1: d -> d // reduction,
    W2: back to d, no biases, no activation; ratio 0.2."""

    def __init__(self, dim: int, *, reduction: int = 4, ratio: float = 0.2) -> None:
        super().__init__()
        if dim // reduction < 1 or not 0 <= ratio <= 1:
            raise ValueError(f"need dim // reduction >= 1 and 0 <= ratio <= 1, got {dim}, {reduction}, {ratio}")
        hidden = dim // reduction
        self.ratio = ratio
        self.body = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.LayerNorm(hidden),
                                  nn.Linear(hidden, dim, bias=False), nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, dim) -> (n, dim)."""
        return self.ratio * self.body(x) + (1 - self.ratio) * x


def make_adapter(kind: str | None, dim: int) -> nn.Module:
    """``"conv-2x"``, ``"conv-3x"`` (:class:`ConvAdapter`), ``"fc"`` (:class:`FCAdapter`), or None (identity)."""
    if kind is None:
        return nn.Identity()
    if kind == "fc":
        return FCAdapter(dim)
    if kind in ("conv-2x", "conv-3x"):
        return ConvAdapter(dim, layers=int(kind[5]))
    raise ValueError(f"unknown adapter {kind!r}; known: {', '.join(ADAPTERS)} or None")


class ProtoCLIPModel(nn.Module):
    """Memories and adapter for one set of N classes.

    ``visual_memory`` (S, d) with ``memory_labels`` (S,) in 0..N-1 (every class present),
    ``text_memory`` (N, d); all are normalised on entry. The visual memory is a parameter, the
    text memory one when ``train_text_memory`` (else fixed); ``memory_features`` keeps the initial
    visual memory (the training queries). ``adapter``: see :func:`make_adapter`; None is Proto-CLIP.
    """

    def __init__(self, visual_memory: torch.Tensor, memory_labels: torch.Tensor, text_memory: torch.Tensor, *,
                 adapter: str | None = None, train_text_memory: bool = True) -> None:
        super().__init__()
        if visual_memory.dim() != 2 or text_memory.dim() != 2 or visual_memory.shape[1] != text_memory.shape[1] \
                or memory_labels.shape != visual_memory.shape[:1]:
            raise ValueError(f"need visual_memory (S, d), memory_labels (S,) and text_memory (N, d); got "
                             f"{tuple(visual_memory.shape)}, {tuple(memory_labels.shape)}, {tuple(text_memory.shape)}")
        labels = memory_labels.long()
        n_classes = text_memory.shape[0]
        if labels.min() < 0 or labels.max() >= n_classes or len(labels.unique()) != n_classes:
            raise ValueError(f"memory_labels must cover exactly the classes 0..{n_classes - 1} of the text memory, "
                             f"got {sorted(labels.unique().tolist())}")
        memory = F.normalize(visual_memory.detach().float(), dim=-1)
        self.visual_memory = nn.Parameter(memory.clone())
        self.text_memory = nn.Parameter(F.normalize(text_memory.detach().float(), dim=-1).clone(),
                                        requires_grad=train_text_memory)
        self.register_buffer("memory_features", memory.clone())
        self.register_buffer("memory_labels", labels.clone())
        self.adapter = make_adapter(adapter, memory.shape[1])

    @property
    def n_classes(self) -> int:
        return self.text_memory.shape[0]

    def image_prototypes(self) -> torch.Tensor:
        """(N, d): :func:`class_prototypes` of the visual memory."""
        return class_prototypes(self.visual_memory, self.memory_labels, self.n_classes)

    def text_prototypes(self) -> torch.Tensor:
        """(N, d): the normalised text memory."""
        return F.normalize(self.text_memory, dim=-1)

    def adapt(self, query: torch.Tensor) -> torch.Tensor:
        """Normalised query features (Q, d) through the adapter, re-normalised."""
        return F.normalize(self.adapter(F.normalize(query.float(), dim=-1)), dim=-1)

    def forward(self, query: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """Class probabilities p (Q, N) of query features (Q, d)."""
        return proto_clip_probabilities(self.adapt(query), self.image_prototypes(), self.text_prototypes(),
                                        alpha, beta)


def epoch_episodes(labels: torch.Tensor, n_classes: int, generator: torch.Generator,
                   class_fraction: tuple[float, float] = (0.2, 0.4)) -> list[torch.Tensor]:
    """One epoch of training episodes: for each, the indices of its query entries in the memory.

    Classes are visited in a random order, ``floor(f0 N)`` (at least 1) to ``floor(f1 N) - 1`` (at
    least that lower bound) at a time; per class, a random n in [1, K_c) of its K_c entries are set
    aside and the rest are queries (K_c = 1: the entry itself). Randomness from ``generator``.
    """
    lower = max(int(n_classes * class_fraction[0]), 1)
    upper = max(int(n_classes * class_fraction[1]) - 1, lower)
    order = torch.randperm(n_classes, generator=generator).tolist()
    members = [torch.nonzero(labels.cpu() == c).flatten() for c in range(n_classes)]
    episodes, start = [], 0
    while start < n_classes:
        size = lower + int(torch.randint(upper - lower + 1, (), generator=generator))
        queries = []
        for c in sorted(order[start:start + size]):
            entries = members[c][torch.randperm(len(members[c]), generator=generator)]
            if len(entries) > 1:
                held = 1 + int(torch.randint(len(entries) - 1, (), generator=generator))
                entries = entries[held:]
            queries.append(entries.sort().values)
        episodes.append(torch.cat(queries))
        start += size
    return episodes


@dataclass(frozen=True)
class FineTuneRecord:
    """``losses``: mean training loss per epoch; ``val_accuracies``: per epoch, when validated;
    ``selected_epoch``: the 1-based epoch whose weights were kept."""

    losses: list[float]
    val_accuracies: list[float] | None
    selected_epoch: int


def accuracy(model: ProtoCLIPModel, features: torch.Tensor, labels: torch.Tensor, alpha: float,
             beta: float) -> float:
    """Fraction of ``features`` (V, d) whose most probable class is their label (V,)."""
    with torch.no_grad():
        return (model(features, alpha, beta).argmax(-1) == labels.to(features.device)).float().mean().item()


def fine_tune(model: ProtoCLIPModel, alpha: float, beta: float, *, n_epochs: int, generator: torch.Generator,
              lr: float = 1e-4, eps: float = 1e-4, weight_decay: float = 0.05,
              class_fraction: tuple[float, float] = (0.2, 0.4), temperature: float = TEMPERATURE,
              loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
              validation: tuple[torch.Tensor, torch.Tensor] | None = None) -> FineTuneRecord:
    """Proto-CLIP-F: train ``model``'s trainable memories and adapter in place (see the module docstring).

    ``validation``: (features (V, d), labels (V,)); when given, accuracy after every epoch decides
    which epoch's weights are kept (the best, later epochs winning ties, as in the code), else the
    last epoch's are. Episodes come from ``generator`` (CPU), so a run is reproducible.
    """
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"n_epochs must be a positive integer, got {n_epochs!r}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, eps=eps, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, n_epochs * len(model.memory_labels))
    device = model.memory_features.device
    losses, val_accuracies = [], [] if validation is not None else None
    best = (-1.0, n_epochs, None)
    for epoch in range(1, n_epochs + 1):
        model.train()
        epoch_losses = []
        for queries in epoch_episodes(model.memory_labels, model.n_classes, generator, class_fraction):
            queries = queries.to(device)
            p = model(model.memory_features[queries], alpha, beta)
            terms = proto_clip_loss(p, model.memory_labels[queries], model.image_prototypes(),
                                    model.text_prototypes(), temperature=temperature, weights=loss_weights)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            epoch_losses.append(terms.total.item())
        schedule.step()
        losses.append(float(np.mean(epoch_losses)))
        if validation is not None:
            model.eval()
            val_accuracies.append(accuracy(model, validation[0].to(device), validation[1], alpha, beta))
            if val_accuracies[-1] >= best[0]:
                best = (val_accuracies[-1], epoch, copy.deepcopy(model.state_dict()))
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return FineTuneRecord(losses, val_accuracies, best[1])


@dataclass(frozen=True)
class AlphaBetaSearch:
    """The grid search's pick and its evidence: ``accuracies[i, j]`` for (``alphas[i]``, ``betas[j]``)."""

    alpha: float
    beta: float
    accuracy: float
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    accuracies: np.ndarray


def search_alpha_beta(query: torch.Tensor, labels: torch.Tensor, image_prototypes: torch.Tensor,
                      text_prototypes: torch.Tensor, *, alphas: Sequence[float] = ALPHAS,
                      betas: Sequence[float] = BETAS) -> AlphaBetaSearch:
    """The (alpha, beta) of the grid with the best accuracy on validation features.

    query (..., Q, d) (already through the adapter for Proto-CLIP-F), labels (..., Q), prototypes
    (..., N, d); every vector is normalised first. Accuracy is over all queries (the mean over
    episodes when they have equal query counts). Ties go to the first grid point in alpha-major
    order, as the code's argmax over its list does.
    """
    if not alphas or not betas:
        raise ValueError("need at least one alpha and one beta")
    with torch.no_grad():
        query = F.normalize(query.float(), dim=-1)
        image = F.normalize(image_prototypes.float(), dim=-1)
        text = F.normalize(text_prototypes.float(), dim=-1)
        d_image, d_text = squared_distances(query, image), squared_distances(query, text)
        labels = labels.to(query.device).long()
        grid = np.zeros((len(alphas), len(betas)))
        for j, beta in enumerate(betas):
            p_image, p_text = F.softmax(-beta * d_image, dim=-1), F.softmax(-beta * d_text, dim=-1)
            for i, alpha in enumerate(alphas):
                predicted = (alpha * p_image + (1 - alpha) * p_text).argmax(-1)
                grid[i, j] = (predicted == labels).double().mean().item()
    i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return AlphaBetaSearch(float(alphas[i]), float(betas[j]), float(grid[i, j]), tuple(map(float, alphas)),
                           tuple(map(float, betas)), grid)
