"""Training-free vision-language learners in the episodic protocol: class names reach them, each scores as
the formula computed by hand, the validation search agrees with the learners, and a suite on the embedded
Omniglot subset writes valid, paired result files; all on a tiny deterministic encoder pair (no download)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protobench.benchmarks import registry
from protobench.benchmarks.protocols.fewshot import training_section
from protobench.benchmarks.runner import SuiteError, check_suite, run_suite
from protobench.benchmarks.suite import load_suite
from protobench.fewshot.datasets import TensorSource, load_omniglot_subset
from protobench.fewshot.encoders import EncoderPair, FeatureCache
from protobench.fewshot.episodes import EpisodeSpec
from protobench.fewshot.evaluation import embed_source, episode_task, evaluate_cached, evaluate_per_episode
from protobench.fewshot.learner import EmbeddingLearner, EpisodeTask, PredictingLearner, TaskBatch, missing_members
from protobench.fewshot.sampler import EpisodeSampler
from protobench.fewshot.tip_adapter import fine_tune_keys
from protobench.fewshot.vl_learners import (
    MINI_IMAGENET_HELD_OUT,
    ProtoCLIPFLearner,
    ProtoCLIPLearner,
    ProtoNetFrozenLearner,
    TextPrototypes,
    TipAdapterFLearner,
    TipAdapterLearner,
    ZeroShotTextLearner,
    build_encoders,
    choose_alpha_beta,
    choose_fine_tuning,
    choose_tip_adapter_f,
    class_prompts,
    offline_pretraining,
    validation_episodes,
)
from protobench.leaderboard.validate import validate_file

DIM = 6
PROMPT = "a photo of a {name}."


class TinyImage:
    """2x2 average pool of each RGB channel (grey repeated), a fixed random projection, normalised."""

    name = "tiny-image"
    feature_dim = DIM
    fingerprint = "tiny-image: seed-0 projection"  # no torch module to hash: the feature store needs this

    def __init__(self) -> None:
        self.weight = torch.randn(12, DIM, generator=torch.Generator().manual_seed(0))
        self.encoded = 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        self.encoded += len(images)
        pooled = F.adaptive_avg_pool2d(images.float().expand(-1, 3, -1, -1), 2).flatten(1)
        return F.normalize(pooled @ self.weight, dim=-1)


class TinyText:
    """Each text's sha256 bytes as DIM numbers in [-1, 1], normalised; remembers what it encoded."""

    name = "tiny-text"
    feature_dim = DIM

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode_texts(self, texts) -> torch.Tensor:
        self.seen += list(texts)
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:DIM], dtype=np.uint8) for t in texts]
        return F.normalize(torch.tensor(np.stack(rows), dtype=torch.float32) / 127.5 - 1, dim=-1)


def tiny_pair() -> EncoderPair:
    return EncoderPair(TinyImage(), TinyText(), is_clip=False)


def text_rows(names) -> torch.Tensor:
    return F.normalize(TinyText().encode_texts([PROMPT.format(name=n) for n in names]), dim=-1)


def episodes_problem(seed: int = 0, batch: int = 3, n_way: int = 4, shots: int = 2, queries: int = 5):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(batch, n_way * shots, DIM, generator=g)
    query = torch.randn(batch, n_way * queries, DIM, generator=g)
    labels = torch.arange(n_way).repeat_interleave(shots)
    classes = np.stack([np.random.default_rng(seed + b).permutation(10)[:n_way] for b in range(batch)])
    names = [f"class{c}" for c in range(10)]
    return support, labels, query, TaskBatch.of(classes, names)


def by_hand_prototypes(support: torch.Tensor, labels: torch.Tensor, n_way: int, normalise: bool) -> torch.Tensor:
    rows = F.normalize(support, dim=-1) if normalise else support
    means = torch.stack([rows[:, labels == c].mean(1) for c in range(n_way)], dim=1)
    return F.normalize(means, dim=-1) if normalise else means


def squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a[:, :, None] - b[:, None]) ** 2).sum(-1)


def task_text(task: TaskBatch) -> torch.Tensor:
    return torch.stack([text_rows(row) for row in task.class_names])


def test_learners_satisfy_the_embedding_protocol():
    for learner in (ProtoCLIPLearner(tiny_pair(), alpha=0.5, beta=1.0), ZeroShotTextLearner(tiny_pair()),
                    TipAdapterLearner(tiny_pair(), alpha=1.0, beta=2.0), ProtoNetFrozenLearner(TinyImage())):
        assert missing_members(learner) == ""
        assert isinstance(learner, EmbeddingLearner) and isinstance(learner, PredictingLearner)


def test_proto_clip_scores_are_the_fused_probabilities_by_hand():
    support, labels, query, task = episodes_problem()
    alpha, beta = 0.3, 4.0
    learner = ProtoCLIPLearner(tiny_pair(), alpha=alpha, beta=beta, prompt=PROMPT, cache=FeatureCache())
    q = F.normalize(query, dim=-1)
    image = by_hand_prototypes(support, labels, task.n_way, normalise=True)
    p = alpha * F.softmax(-beta * squared(q, image), -1) + (1 - alpha) * F.softmax(-beta * squared(q, task_text(task)),
                                                                                   -1)
    torch.testing.assert_close(learner.score(support, labels, query, task), p.log(), atol=1e-5, rtol=1e-5)


def test_zero_shot_and_tip_adapter_scores_by_hand():
    support, labels, query, task = episodes_problem(1)
    q, text = F.normalize(query, dim=-1), task_text(task)
    zero_shot = 100 * q @ text.transpose(1, 2)
    torch.testing.assert_close(ZeroShotTextLearner(tiny_pair(), prompt=PROMPT).score(support, labels, query, task),
                               zero_shot)
    alpha, beta = 1.7, 5.5
    affinity = q @ F.normalize(support, dim=-1).transpose(1, 2)
    cache = torch.exp(-beta * (1 - affinity)) @ F.one_hot(labels, task.n_way).float()
    tip = TipAdapterLearner(tiny_pair(), alpha=alpha, beta=beta, prompt=PROMPT)
    torch.testing.assert_close(tip.score(support, labels, query, task), zero_shot + alpha * cache)


def test_proto_clip_f_fine_tunes_each_episode_alone_and_leaves_the_global_generator():
    support, labels, query, task = episodes_problem(3)
    learner = ProtoCLIPFLearner(tiny_pair(), alpha=0.5, beta=2.0, adapter="fc", epochs=5, lr=1e-2, prompt=PROMPT)
    state = torch.random.get_rng_state()
    scores = learner.score(support, labels, query, task)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert scores.shape == (3, 20, 4) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores.exp().sum(-1), torch.ones(3, 20))  # log p of a distribution
    alone = TaskBatch(task.n_way, task.classes[1:2], task.class_names[1:2])
    torch.testing.assert_close(learner.score(support[1:2], labels, query[1:2], alone), scores[1:2])  # batch-free
    training_free = ProtoCLIPLearner(tiny_pair(), alpha=0.5, beta=2.0, prompt=PROMPT).score(support, labels, query,
                                                                                          task)
    assert (scores - training_free).abs().max() > 1e-3  # the fine-tuning changed the scores


def image_episode(seed: int = 0, n_way: int = 4, shots: int = 2, queries: int = 5) -> EpisodeTask:
    """An episode of random 1x12x12 images with named classes."""
    g = torch.Generator().manual_seed(seed)
    support = torch.rand(n_way * shots, 1, 12, 12, generator=g)
    query = torch.rand(n_way * queries, 1, 12, 12, generator=g)
    return EpisodeTask(support, torch.arange(n_way).repeat_interleave(shots), query, np.arange(n_way) + 3,
                       tuple(f"class{c}" for c in range(3, 3 + n_way)))


def test_tip_adapter_f_trains_on_views_of_its_support_episode_by_episode():
    task = image_episode()
    cache = FeatureCache()
    learner = TipAdapterFLearner(tiny_pair(), alpha=1.5, beta=3.0, epochs=5, lr=1e-2, train_views=3, prompt=PROMPT,
                                 cache=cache)
    assert missing_members(learner) == "" and isinstance(learner, PredictingLearner)
    assert not isinstance(learner, EmbeddingLearner)  # the runner hands it each episode's images
    state = torch.random.get_rng_state()
    logits = learner.predict(task)
    assert torch.equal(torch.random.get_rng_state(), state) and logits.shape == (20, 4)
    assert cache.encoded == 8 * (1 + 3) + 20  # support, its 3 views, queries: each once
    torch.testing.assert_close(learner.predict(task), logits)
    assert cache.encoded == 8 * (1 + 3) + 20
    fresh = TipAdapterFLearner(tiny_pair(), alpha=1.5, beta=3.0, epochs=5, lr=1e-2, train_views=3, prompt=PROMPT)
    torch.testing.assert_close(fresh.predict(task), logits)  # the episode alone fixes the score
    training_free = TipAdapterLearner(tiny_pair(), alpha=1.5, beta=3.0, prompt=PROMPT).predict(task)
    assert (logits - training_free).abs().max() > 1e-3
    one_view = TipAdapterFLearner(tiny_pair(), alpha=1.5, beta=3.0, epochs=5, lr=1e-2, train_views=1, prompt=PROMPT)
    assert (one_view.predict(task) - logits).abs().max() > 1e-4  # the views are what it trains on


def test_tip_adapter_f_keys_would_not_move_if_trained_on_the_support_itself():
    """Why the views: a support image's own key gives its class alpha x exp(0), so with a large alpha its
    cross-entropy is zero and so are the gradients (as measured on mini-ImageNet at the val-chosen alpha)."""
    g = torch.Generator().manual_seed(1)
    keys = F.normalize(torch.randn(8, 64, generator=g), dim=-1)
    text = F.normalize(torch.randn(4, 64, generator=g), dim=-1)
    labels = torch.arange(4).repeat_interleave(2)
    trained, record = fine_tune_keys(keys, labels, text, keys, labels, 300.0, 5.0, n_epochs=5, lr=1e-2,
                                     generator=torch.Generator().manual_seed(0))
    assert max(record.losses) < 1e-6
    assert (trained - keys).abs().max() < 1e-3  # weight decay alone moves them (by about 1e-4)
    views = F.normalize(keys + 0.5 * torch.randn(8, 64, generator=g) / 8, dim=-1)  # cosine about 0.9 to the key
    moved, record = fine_tune_keys(keys, labels, text, views, labels, 3.0, 5.0, n_epochs=5, lr=1e-2,
                                   generator=torch.Generator().manual_seed(0))
    assert record.losses[0] > 1e-3 and (moved - keys).abs().max() > 1e-2


def test_proto_clip_f_refuses_bad_settings():
    for bad in ({"adapter": "mlp"}, {"epochs": 0}, {"epochs": 1.5}, {"lr": 0}, {"train_text_memory": "yes"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ProtoCLIPFLearner(tiny_pair(), alpha=0.5, beta=2.0, **bad)
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"train_views": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TipAdapterFLearner(tiny_pair(), alpha=0.5, beta=2.0, **bad)
    with pytest.raises(ValueError, match="beta > 0"):
        TipAdapterFLearner(tiny_pair(), alpha=0.5, beta=2.0, train_beta=0.0)


def test_protonet_frozen_is_minus_squared_distance_to_support_means_and_needs_no_names():
    support, labels, query, task = episodes_problem(2)
    nameless = TaskBatch(task.n_way, task.classes, None)
    expected = -squared(query, by_hand_prototypes(support, labels, task.n_way, normalise=False))
    torch.testing.assert_close(ProtoNetFrozenLearner(TinyImage()).score(support, labels, query, nameless), expected,
                               atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("make", [lambda: ProtoCLIPLearner(tiny_pair(), alpha=0.5, beta=1.0),
                                  lambda: ZeroShotTextLearner(tiny_pair()),
                                  lambda: TipAdapterLearner(tiny_pair(), alpha=1.0, beta=1.0)],
                         ids=["proto-clip", "zero-shot-text", "tip-adapter"])
def test_a_task_without_class_names_is_refused_clearly(make):
    support, labels, query, task = episodes_problem()
    with pytest.raises(ValueError, match="needs the names of each episode's classes.*no class_names"):
        make().score(support, labels, query, TaskBatch(task.n_way, task.classes, None))
    source = TensorSource(torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)),
                          np.repeat(np.arange(4), 10))  # no class_names
    learner = make()
    with pytest.raises(ValueError, match="needs the names"):
        evaluate_cached(learner, embed_source(learner, source), EpisodeSampler(source, EpisodeSpec(2, 1, 2), seed=0,
                                                                               n_episodes=2))


def named_source(n_classes: int = 8, per_class: int = 6, seed: int = 0) -> TensorSource:
    """Images whose class sets their mean brightness pattern, plus noise; classes named ``c0``.. ."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.rand(n_classes, 1, 4, 4, generator=g)
    labels = np.repeat(np.arange(n_classes), per_class)
    images = (pattern[labels] + 0.3 * torch.rand(len(labels), 1, 4, 4, generator=g)).clamp(0, 1)
    return TensorSource(images, labels, [f"c{c}" for c in range(n_classes)])


def test_class_names_reach_the_learner_in_episode_class_order():
    source = named_source()
    seen = []

    class Recording(ZeroShotTextLearner):
        def score(self, support, support_labels, query, task):
            seen.append(task)
            return super().score(support, support_labels, query, task)

    pair = tiny_pair()
    learner = Recording(pair, prompt=PROMPT, cache=FeatureCache())
    sampler = EpisodeSampler(source, EpisodeSpec(3, 1, 2), seed=5, n_episodes=10)
    evaluate_cached(learner, embed_source(learner, source), sampler, chunk=4, class_names=source.class_names)
    assert sum(len(task.classes) for task in seen) == 10
    for task in seen:
        assert task.class_names == tuple(tuple(f"c{c}" for c in row) for row in task.classes.tolist())
    used = {f"c{c}" for task in seen for c in task.classes.ravel().tolist()}
    assert sorted(pair.text.seen) == sorted(PROMPT.format(name=n) for n in used)  # each name encoded once
    episode = sampler[3]
    task = episode_task(source, episode, source.class_names)
    assert task.class_names == tuple(f"c{c}" for c in episode.classes.tolist())
    batch = TaskBatch.of(episode.classes[None], source.class_names)
    expected = learner.score(learner.embed(task.support_x)[None], task.support_y, learner.embed(task.query_x)[None],
                             batch)[0]
    torch.testing.assert_close(learner.predict(task), expected)


def test_embed_encodes_each_image_once_per_cache():
    source, pair, cache = named_source(), tiny_pair(), FeatureCache()
    first = ProtoCLIPLearner(pair, alpha=0.5, beta=1.0, cache=cache)
    second = ProtoNetFrozenLearner(pair.image, cache=cache)
    features = embed_source(first, source)
    torch.testing.assert_close(embed_source(second, source), features)
    assert pair.image.encoded == len(source)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(len(source)))


def test_class_prompts_read_wordnet_ids_as_imagenet_lemmas():
    assert class_prompts(["Foo_bar/x"], "a {name}.{definition}") == ["a Foo bar/x."]
    pytest.importorskip("timm")
    assert class_prompts(["n01532829", "dog"]) == ["a photo of a house finch.", "a photo of a dog."]


def test_text_prototypes_refuse_a_class_the_text_map_was_fitted_on():
    text = TextPrototypes(TinyText(), held_out={"n01855672"})
    with pytest.raises(ValueError, match=r"\['n01532829'\] were not held out"):
        text.rows(["n01532829"])
    with pytest.raises(ValueError, match="'{name}' field"):
        TextPrototypes(TinyText(), prompt="a photo")


def test_choose_alpha_beta_picks_settings_the_learners_reproduce():
    source, spec = named_source(), EpisodeSpec(4, 2, 3)
    pair = tiny_pair()
    learner = ZeroShotTextLearner(pair, cache=FeatureCache())
    episodes = validation_episodes(learner, source, spec, seed=3, n_episodes=12)
    search = choose_alpha_beta(learner, episodes, tip_betas=[0.5, 2.0, 6.0], tip_alphas=[0.1, 1.0, 3.0])
    sampler = EpisodeSampler(source, spec, seed=3, n_episodes=12)
    assert search.digest == sampler.digest()
    cache = FeatureCache()
    best = ProtoCLIPLearner(pair, alpha=search.proto_clip.alpha, beta=search.proto_clip.beta, cache=cache)
    features = embed_source(best, source)
    accuracy = evaluate_cached(best, features, sampler, class_names=source.class_names).mean()
    assert accuracy == pytest.approx(search.proto_clip.accuracy)
    assert search.proto_clip.accuracy == pytest.approx(search.proto_clip.accuracies.max())
    tip = TipAdapterLearner(pair, alpha=search.tip_adapter.alpha, beta=search.tip_adapter.beta, cache=cache)
    assert evaluate_cached(tip, features, sampler, class_names=source.class_names).mean() == pytest.approx(
        search.tip_adapter.accuracy)
    record = search.to_dict()
    assert record["protocol"] == spec.key and record["proto_clip"]["alpha"] == search.proto_clip.alpha


def test_choose_fine_tuning_keeps_the_grid_point_the_learner_reproduces():
    source, spec = named_source(), EpisodeSpec(4, 2, 3)
    pair, cache = tiny_pair(), FeatureCache()
    episodes = validation_episodes(ZeroShotTextLearner(pair, cache=cache), source, spec, seed=5, n_episodes=6)
    sampler = EpisodeSampler(source, spec, seed=5, n_episodes=6)
    assert episodes.digest == sampler.digest() and episodes.query.shape[:2] == (6, 12)
    head = episodes.first(2)
    assert head.support_labels.shape == (2, 8) and head.query.shape[:2] == (2, 12) and len(head.task.classes) == 2

    def make(epochs: int, lr: float) -> ProtoCLIPFLearner:
        return ProtoCLIPFLearner(pair, alpha=0.5, beta=2.0, epochs=epochs, lr=lr, cache=cache)

    choice = choose_fine_tuning(make, episodes, epochs_grid=[3, 1], lr_grid=[1e-1, 1e-3])
    assert sorted(choice.accuracies) == [(1, 1e-3), (1, 1e-1), (3, 1e-3), (3, 1e-1)]
    assert choice.accuracy == max(choice.accuracies.values()) == choice.accuracies[(choice.epochs, choice.lr)]
    best = make(choice.epochs, choice.lr)
    accuracy = evaluate_cached(best, embed_source(best, source), sampler, class_names=source.class_names).mean()
    assert accuracy == pytest.approx(choice.accuracy)

    def make_tip(epochs: int, lr: float) -> TipAdapterFLearner:  # a predicting learner: scored from the images
        return TipAdapterFLearner(pair, alpha=1.0, beta=3.0, epochs=epochs, lr=lr, train_views=2, cache=cache)

    tip_choice = choose_fine_tuning(make_tip, head, epochs_grid=[2], lr_grid=[1e-2])
    per_episode = evaluate_per_episode(make_tip(2, 1e-2), source, EpisodeSampler(source, spec, seed=5,
                                                                                  n_episodes=6).episodes(0, 2))
    assert tip_choice.accuracy == pytest.approx(per_episode.mean())


def test_choose_tip_adapter_f_searches_alpha_beta_for_the_trained_keys():
    source, spec = named_source(), EpisodeSpec(4, 2, 3)
    pair, cache = tiny_pair(), FeatureCache()
    episodes = validation_episodes(ZeroShotTextLearner(pair, cache=cache), source, spec, seed=6, n_episodes=4)

    def make(epochs: int, lr: float, alpha: float = 1.0, beta: float = 1.0) -> TipAdapterFLearner:
        return TipAdapterFLearner(pair, alpha=alpha, beta=beta, epochs=epochs, lr=lr, train_views=2,
                                  train_alpha=2.0, train_beta=1.5, cache=cache)

    betas, alphas = [0.5, 2.0, 6.0], [0.1, 1.0, 30.0]
    choice = choose_tip_adapter_f(make, episodes, [1, 3], [1e-2], betas=betas, alphas=alphas)
    assert sorted(choice.accuracies) == [(1, 1e-2), (3, 1e-2)] and choice.alpha in alphas and choice.beta in betas
    assert choice.accuracy == max(choice.accuracies.values()) == choice.accuracies[(choice.epochs, choice.lr)]
    best = make(choice.epochs, choice.lr, choice.alpha, choice.beta)  # trained as searched, scored at the pick
    assert episodes.accuracy(best) == pytest.approx(choice.accuracy)
    for alpha in alphas:
        for beta in betas:
            assert episodes.accuracy(make(choice.epochs, choice.lr, alpha, beta)) <= choice.accuracy + 1e-12


def test_build_encoders_refuses_bad_encoder_params_before_loading_anything():
    with pytest.raises(ValueError, match="unknown encoder 'clip'"):
        build_encoders("clip")
    with pytest.raises(ValueError, match="open_clip:<model>:<pretrained>"):
        build_encoders("open_clip:ViT-B-32")
    with pytest.raises(ValueError, match="ridge and resolution apply to"):
        build_encoders("open_clip:ViT-B-32:openai", ridge=1.0)
    with pytest.raises(ValueError, match="resolution must be a positive integer"):
        build_encoders(resolution=0)
    text = offline_pretraining(len(MINI_IMAGENET_HELD_OUT))
    assert "not CLIP" in text and "ImageNet-1k" in text and len(text) <= 256


def test_held_out_synsets_are_mini_imagenet_val_and_test_classes():
    from protobench.fewshot.encoders import mini_imagenet_held_out_synsets

    root = Path(os.environ.get("PROTOBENCH_DATA", "/nonexistent")) / "mini-imagenet"
    if not (root / "splits" / "ravi" / "test.csv").is_file():
        pytest.skip("mini-ImageNet split files not found under $PROTOBENCH_DATA")
    assert mini_imagenet_held_out_synsets(root) == list(MINI_IMAGENET_HELD_OUT)


# --- through the runner -----------------------------------------------------------------------------

PAIR: dict[str, object] = {}
PRETRAINED = "tiny test pair; not CLIP"


def tiny_proto_clip(input_shape: tuple[int, ...], device: str, alpha: float, beta: float) -> ProtoCLIPLearner:
    return ProtoCLIPLearner(PAIR["pair"], alpha=alpha, beta=beta, pretraining=PRETRAINED, cache=PAIR["cache"])


def tiny_proto_clip_f(input_shape: tuple[int, ...], device: str, alpha: float, beta: float,
                      epochs: int) -> ProtoCLIPFLearner:
    return ProtoCLIPFLearner(PAIR["pair"], alpha=alpha, beta=beta, epochs=epochs, pretraining=PRETRAINED,
                             cache=PAIR["cache"])


def tiny_tip_f(input_shape: tuple[int, ...], device: str, alpha: float, beta: float, epochs: int,
               train_views: int) -> TipAdapterFLearner:
    return TipAdapterFLearner(PAIR["pair"], alpha=alpha, beta=beta, epochs=epochs, train_views=train_views,
                              pretraining=PRETRAINED, cache=PAIR["cache"])


def tiny_zero_shot(input_shape: tuple[int, ...], device: str) -> ZeroShotTextLearner:
    return ZeroShotTextLearner(PAIR["pair"], pretraining=PRETRAINED, cache=PAIR["cache"])


def tiny_tip(input_shape: tuple[int, ...], device: str, alpha: float, beta: float) -> TipAdapterLearner:
    return TipAdapterLearner(PAIR["pair"], alpha=alpha, beta=beta, pretraining=PRETRAINED, cache=PAIR["cache"])


def tiny_protonet(input_shape: tuple[int, ...], device: str) -> ProtoNetFrozenLearner:
    return ProtoNetFrozenLearner(PAIR["pair"].image, pretraining="tiny test image encoder", cache=PAIR["cache"])


SUITE = """
name = "tiny-vl"
benchmarks = ["omniglot-subset"]
seeds = [0]
tests = [{ n_way = 5, n_shot = 1, n_query = 3, episodes = 20 }, { n_way = 5, n_shot = 5, n_query = 3, episodes = 20 }]

[[methods]]
label = "tiny-proto-clip"
method = "test-tiny-proto-clip"
params = { alpha = 0.5, beta = 2.0 }
chosen_on = "val: a test"

[[methods]]
method = "test-tiny-proto-clip-f"
params = { alpha = 0.5, beta = 2.0, epochs = 3 }

[[methods]]
method = "test-tiny-tip-f"
params = { alpha = 1.0, beta = 3.0, epochs = 3, train_views = 2 }

[[methods]]
method = "test-tiny-zero-shot"

[[methods]]
method = "test-tiny-tip"
params = { alpha = 1.0, beta = 3.0 }

[[methods]]
method = "test-tiny-protonet"
"""


@pytest.fixture
def tiny_methods(monkeypatch):
    monkeypatch.setattr(registry, "_methods", dict(registry.methods()))
    for name, factory in (("test-tiny-proto-clip", tiny_proto_clip), ("test-tiny-proto-clip-f", tiny_proto_clip_f),
                          ("test-tiny-tip-f", tiny_tip_f), ("test-tiny-zero-shot", tiny_zero_shot),
                          ("test-tiny-tip", tiny_tip), ("test-tiny-protonet", tiny_protonet)):
        registry.register_method(name)(factory)
    PAIR.update(pair=tiny_pair(), cache=FeatureCache())
    yield
    PAIR.clear()


def test_a_suite_on_the_omniglot_subset_writes_valid_paired_results(tiny_methods, tmp_path):
    path = tmp_path / "tiny-vl.toml"
    path.write_text(SUITE)
    results = run_suite(load_suite(path), out_dir=tmp_path / "out", data_root=None, device="cpu", progress=False)
    files = sorted((tmp_path / "out").glob("*.json"))
    assert len(results) == len(files) == 12
    assert all(validate_file(file) == [] for file in files)
    by_protocol: dict[str, set] = {}
    for result in results:
        by_protocol.setdefault(result["benchmark"]["protocol"], set()).add(result["episodes"]["digest"])
        method = result["method"]
        if method["name"] == "test-tiny-protonet":
            assert method["backbone"] == "tiny-image" and method["pretraining"] == "tiny test image encoder"
        else:
            assert method["backbone"] == "tiny-image+tiny-text [not CLIP]" and method["pretraining"] == PRETRAINED
    assert all(len(digests) == 1 for digests in by_protocol.values()) and len(by_protocol) == 2  # paired
    proto = next(r for r in results if r["method"]["configuration"] == "tiny-proto-clip")
    assert proto["training"]["chosen_on"] == "val: a test" and proto["method"]["params"]["alpha"] == 0.5
    assert "chosen_on" not in next(r for r in results if r["method"]["name"] == "test-tiny-zero-shot")["training"]
    test_source = load_omniglot_subset("test")
    support_draws = 20 * 5 + 20 * 25  # tip-f's 2 views of each support image, at most
    assert 0 < PAIR["pair"].image.encoded <= len(test_source) + 2 * support_draws  # one cache: six units encode once
    assert list((tmp_path / "out" / "feature-cache").rglob("*.safetensors"))
    names = set(test_source.class_names)
    assert PAIR["pair"].text.seen and all(t.startswith("a photo of a ") and t[13:-1].replace(" ", "_") in names
                                          for t in PAIR["pair"].text.seen)


def test_suite_check_needs_alpha_and_beta_and_a_short_chosen_on(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nbenchmarks = ["omniglot-subset"]\n'
                    'tests = [{ n_way = 5, n_shot = 1, n_query = 3, episodes = 20 }]\n'
                    '[[methods]]\nmethod = "proto-clip"\nparams = { beta = 1.0 }\n')
    with pytest.raises(SuiteError, match="missing a required argument: 'alpha'"):
        check_suite(load_suite(path), None)
    path.write_text(path.read_text() + f'chosen_on = "{"x" * 257}"\n')
    with pytest.raises(ValueError, match="chosen_on: expected a short text"):
        load_suite(path)


def test_training_section_records_chosen_on_beside_a_retrain_choice():
    record = {"episodes": 0, "train_seconds": 0.0, "selected_episode": 0, "curve": []}
    assert training_section(record, None) == {"selected_episode": 0, "curve": []}
    assert training_section(record, "val: grid")["chosen_on"] == "val: grid"
    retrained = {**record, "chosen_on": "val", "stage": "retrain"}
    assert training_section(retrained, "val: grid")["chosen_on"] == "val: grid; episode count chosen on val"


def test_a_later_run_reads_the_stored_features_instead_of_encoding(tiny_methods, tmp_path):
    path = tmp_path / "tiny-vl.toml"
    path.write_text(SUITE)
    first = run_suite(load_suite(path), out_dir=tmp_path / "out", data_root=None, device="cpu", progress=False)
    for file in (tmp_path / "out").glob("*.json"):
        file.unlink()
    PAIR.update(pair=tiny_pair(), cache=FeatureCache())  # a new encoder object and an empty memory cache
    again = run_suite(load_suite(path), out_dir=tmp_path / "out", data_root=None, device="cpu", progress=False)
    assert PAIR["pair"].image.encoded == 0
    assert [r["evidence"] for r in again] == [r["evidence"] for r in first]
