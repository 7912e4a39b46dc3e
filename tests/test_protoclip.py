"""Proto-CLIP: scores and losses against hand-computed values, prototypes, adapters (shapes, residual mixing,
a hand recomputation), the alpha/beta search against a brute-force loop, memories (augmentation, visual and
text memory), training-free inference leaving memories untouched, the training episodes, and Proto-CLIP-F
lowering its loss on a small separable problem."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from protobench.fewshot import protoclip
from protobench.fewshot.protoclip import (
    ALPHAS,
    BETAS,
    ConvAdapter,
    FCAdapter,
    ProtoCLIPModel,
    class_prototypes,
    episode_log_probabilities,
    info_nce,
    proto_clip_loss,
    proto_clip_probabilities,
    search_alpha_beta,
    squared_distances,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_squared_distances_by_hand():
    query = torch.tensor([[1.0, 2.0]])
    prototypes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 2.0], [1.0, 2.0]])
    torch.testing.assert_close(squared_distances(query, prototypes), torch.tensor([[5.0, 4.0, 4.0, 0.0]]))


def test_probabilities_by_hand():
    query = torch.tensor([[1.0, 0.0]])
    image, text = torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # squared distances: image [0, 2], text [2, 0]; softmax(-[0, 2]) = [a, b]
    a, b = 1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2))
    p = proto_clip_probabilities(query, image, text, alpha=0.25, beta=1.0)
    torch.testing.assert_close(p, torch.tensor([[0.25 * a + 0.75 * b, 0.25 * b + 0.75 * a]]))
    # beta scales the distances: beta = 3 gives softmax(-[0, 6]) from the image side
    p = proto_clip_probabilities(query, image, text, alpha=1.0, beta=3.0)
    torch.testing.assert_close(p, torch.tensor([[1 / (1 + math.exp(-6)), math.exp(-6) / (1 + math.exp(-6))]]))
    with pytest.raises(ValueError, match="alpha"):
        proto_clip_probabilities(query, image, text, alpha=1.5, beta=1.0)


def test_alpha_one_is_image_prototypes_alone_and_zero_is_text_alone():
    g = gen(0)
    query = F.normalize(torch.randn(7, 5, generator=g), dim=-1)
    image, text = F.normalize(torch.randn(3, 5, generator=g), dim=-1), F.normalize(torch.randn(3, 5, generator=g),
                                                                                   dim=-1)
    p_image = proto_clip_probabilities(query, image, text, 1.0, 4.0)
    p_text = proto_clip_probabilities(query, image, text, 0.0, 4.0)
    torch.testing.assert_close(p_image, F.softmax(-4.0 * torch.cdist(query, image) ** 2, dim=-1))
    torch.testing.assert_close(p_text, F.softmax(-4.0 * torch.cdist(query, text) ** 2, dim=-1))
    # on normalised vectors the most probable class is the nearest (most cosine-similar) prototype
    assert torch.equal(p_image.argmax(-1), (query @ image.T).argmax(-1))
    assert torch.equal(p_text.argmax(-1), (query @ text.T).argmax(-1))
    torch.testing.assert_close(proto_clip_probabilities(query, image, text, 0.3, 4.0), 0.3 * p_image + 0.7 * p_text)


def test_info_nce_by_hand():
    identity = torch.eye(2)
    torch.testing.assert_close(info_nce(identity, identity), torch.tensor(math.log(1 + math.exp(-10))))
    # cosine similarity: scaling the rows changes nothing
    torch.testing.assert_close(info_nce(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), identity),
                               torch.tensor(math.log(1 + math.exp(-10))))
    torch.testing.assert_close(info_nce(identity, identity.flip(0)), torch.tensor(math.log(1 + math.exp(10))))
    # other rows are the negatives: image [1, 0], [0.6, 0.8] against text e1, e2 (temperature 0.1)
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    image_to_text = (math.log(1 + math.exp(-10)) + math.log(1 + math.exp(-2))) / 2   # rows [10, 0], [6, 8]
    text_to_image = (math.log(1 + math.exp(-4)) + math.log(1 + math.exp(-8))) / 2    # rows [10, 6], [0, 8]
    torch.testing.assert_close(info_nce(image, identity), torch.tensor(image_to_text))
    torch.testing.assert_close(info_nce(identity, image), torch.tensor(text_to_image))
    torch.testing.assert_close(info_nce(image, identity, temperature=1.0),
                               torch.tensor((math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-0.2))) / 2))


def test_proto_clip_loss_by_hand():
    p = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    labels = torch.tensor([0, 1])
    image, text = torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.eye(2)
    nll = -(math.log(0.7) + math.log(0.6)) / 2
    image_to_text = (math.log(1 + math.exp(-10)) + math.log(1 + math.exp(-2))) / 2
    text_to_image = (math.log(1 + math.exp(-4)) + math.log(1 + math.exp(-8))) / 2
    terms = proto_clip_loss(p, labels, image, text)
    torch.testing.assert_close(terms.nll, torch.tensor(nll))
    torch.testing.assert_close(terms.image_to_text, torch.tensor(image_to_text))
    torch.testing.assert_close(terms.text_to_image, torch.tensor(text_to_image))
    torch.testing.assert_close(terms.total, torch.tensor(nll + image_to_text + text_to_image))
    weighted = proto_clip_loss(p, labels, image, text, weights=(1.0, 0.5, 2.0))
    torch.testing.assert_close(weighted.total, torch.tensor(nll + 0.5 * image_to_text + 2 * text_to_image))
    # a zero probability gives a large finite loss, not inf
    assert torch.isfinite(proto_clip_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), image, text).total)


def test_class_prototypes_by_hand():
    features = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    prototypes = class_prototypes(features, torch.tensor([0, 0, 1]), 2)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(prototypes, torch.tensor([[s, s], [0.6, 0.8]]))
    batched = class_prototypes(torch.stack([features, features.flip(0)]), torch.tensor([[0, 0, 1], [1, 0, 0]]), 2)
    torch.testing.assert_close(batched, torch.stack([prototypes, prototypes]))
    with pytest.raises(ValueError, match="at least one entry"):
        class_prototypes(features, torch.tensor([0, 0, 2]), 3)


def test_episode_log_probabilities_match_one_episode_at_a_time():
    g = gen(1)
    support, query = torch.randn(2, 6, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    labels, text = torch.tensor([0, 1, 2, 0, 1, 2]), torch.randn(2, 3, 8, generator=g)
    batched = episode_log_probabilities(support, labels, query, text, 0.6, 5.0)
    for b in range(2):
        image = class_prototypes(support[b], labels, 3)
        p = proto_clip_probabilities(F.normalize(query[b], dim=-1), image, F.normalize(text[b], dim=-1), 0.6, 5.0)
        torch.testing.assert_close(batched[b], p.log())


def test_conv_adapters_shapes_and_padding():
    x = torch.randn(5, 10, generator=gen(2))
    two, three = ConvAdapter(10, layers=2), ConvAdapter(10, layers=3)
    assert two(x).shape == three(x).shape == (5, 10) and two.side == 4
    conv3x3 = [m for m in three.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(conv3x3) == 1 and conv3x3[0].weight.shape == (16, 16, 3, 3)
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in two.modules())
    # with the last convolution zeroed, the body gives LayerNorm(0) = its bias (0): the output is the input
    for adapter in (two, three):
        with torch.no_grad():
            adapter.body[-2].weight.zero_()
        torch.testing.assert_close(adapter(x), x)
    with pytest.raises(ValueError, match="unknown adapter"):
        protoclip.make_adapter("conv-4x", 10)


def test_conv_2x_adapter_by_hand():
    torch.manual_seed(0)  # weight initialisation
    adapter, x = ConvAdapter(7, layers=2), torch.randn(3, 7, generator=gen(3))
    with torch.no_grad():
        for layer_norm in adapter.body[1::2]:
            layer_norm.weight.uniform_(0.5, 1.5)
            layer_norm.bias.uniform_(-0.5, 0.5)
    first, norm1, last, norm3 = adapter.body
    square = torch.cat([x, torch.zeros(3, 2)], 1).view(3, 1, 3, 3)
    hidden = first.weight.view(1, 16, 1, 1) * square                       # 1x1 convolution 1 -> 16
    hidden = F.layer_norm(hidden, (16, 3, 3), norm1.weight, norm1.bias)
    out = (last.weight.view(1, 16, 1, 1) * hidden).sum(1, keepdim=True)   # 1x1 convolution 16 -> 1
    out = F.layer_norm(out, (1, 3, 3), norm3.weight, norm3.bias) + square
    torch.testing.assert_close(adapter(x), out.view(3, 9)[:, :7])


def test_fc_adapter_mixes_a_fifth_of_its_body_with_the_input():
    adapter, x = FCAdapter(8), torch.randn(4, 8, generator=gen(4))
    assert adapter(x).shape == (4, 8) and adapter.body[0].weight.shape == (2, 8)
    with torch.no_grad():
        adapter.body[2].weight.zero_()
        adapter.body[3].bias.copy_(torch.arange(8.0))
    torch.testing.assert_close(adapter(x), 0.2 * torch.arange(8.0) + 0.8 * x)


def test_grids_are_the_codes():
    assert ALPHAS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert BETAS[:9] == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9) and BETAS[9:] == tuple(map(float, range(1, 21)))


@pytest.mark.parametrize("seed", [0, 1])
def test_search_picks_what_a_brute_force_loop_picks(seed):
    g = gen(seed)
    centres = F.normalize(torch.randn(4, 6, generator=g), dim=-1)
    labels = torch.randint(4, (40,), generator=g)
    query = F.normalize(centres[labels] + 0.9 * torch.randn(40, 6, generator=g), dim=-1)
    image = F.normalize(centres + 0.5 * torch.randn(4, 6, generator=g), dim=-1)
    text = F.normalize(centres + 0.7 * torch.randn(4, 6, generator=g), dim=-1)
    found = search_alpha_beta(query, labels, image, text)
    best, pick = -1.0, None
    for alpha in ALPHAS:
        for beta in BETAS:
            p = proto_clip_probabilities(query, image, text, alpha, beta)
            accuracy = (p.argmax(-1) == labels).float().mean().item()
            if accuracy > best:
                best, pick = accuracy, (alpha, beta)
    assert (found.alpha, found.beta) == pick
    assert found.accuracy == pytest.approx(best) and found.accuracies.shape == (11, 29)
    assert found.accuracies.max() == pytest.approx(best)


def test_search_over_episodes_and_ties_go_to_the_first_grid_point():
    # every setting classifies these queries perfectly: the first grid point wins
    query = torch.eye(3)[None].expand(2, -1, -1)
    labels = torch.arange(3).expand(2, -1)
    found = search_alpha_beta(query, labels, torch.eye(3), torch.eye(3))
    assert (found.alpha, found.beta, found.accuracy) == (0.0, 0.1, 1.0)
    # text prototypes that are wrong: only alpha > 1/2 can be right, and the first such alpha wins
    found = search_alpha_beta(torch.eye(3), torch.arange(3), torch.eye(3), torch.eye(3)[[1, 2, 0]])
    assert found.alpha == 0.6 and found.accuracy == 1.0


def test_augment_crop_flip_is_keyed_and_stays_in_range():
    images = torch.rand(6, 3, 12, 10, generator=gen(5))
    one = protoclip.augment_crop_flip(images, gen(7))
    assert one.shape == images.shape and one.min() >= 0 and one.max() <= 1
    torch.testing.assert_close(one, protoclip.augment_crop_flip(images, gen(7)))
    assert not torch.allclose(one, protoclip.augment_crop_flip(images, gen(8)))
    constant = torch.full((2, 3, 12, 12), 0.25)
    torch.testing.assert_close(protoclip.augment_crop_flip(constant, gen(0)), constant)
    # a crop of the full area at ratio 1 is the image itself, flipped or not
    square = torch.rand(16, 3, 8, 8, generator=gen(6))
    full = protoclip.augment_crop_flip(square, gen(9), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = [torch.equal(f, s.flip(-1)) for f, s in zip(full, square, strict=True)]
    kept = [torch.equal(f, s) for f, s in zip(full, square, strict=True)]
    assert all(a or b for a, b in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


class MeanColour:
    """Normalised mean colour (plus a bias): a 3-d image encoder."""

    name, feature_dim = "mean-colour", 3

    def encode_images(self, images):
        return F.normalize(images.float().mean((2, 3)) + 0.1, dim=-1)


def test_visual_memory_averages_augmented_passes():
    images = torch.rand(4, 3, 10, 10, generator=gen(10))
    encoder = MeanColour()
    memory = protoclip.visual_memory(encoder, images, gen(11), n_augment=3)
    torch.testing.assert_close(memory.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(memory, protoclip.visual_memory(encoder, images, gen(11), n_augment=3))
    g = gen(11)
    passes = [encoder.encode_images(protoclip.augment_crop_flip(images, g)) for _ in range(3)]
    torch.testing.assert_close(memory, F.normalize(sum(passes) / 3, dim=-1))
    with pytest.raises(ValueError, match="n_augment"):
        protoclip.visual_memory(encoder, images, gen(0), n_augment=0)


class Pixels:
    """Every pixel as a feature: any crop or flip changes it."""

    name, feature_dim, fingerprint = "pixels", 3 * 8 * 8, "pixels: identity"

    def __init__(self) -> None:
        self.encoded = 0

    def encode_images(self, images):
        self.encoded += len(images)
        return F.normalize(images.float().flatten(1), dim=-1)


def test_augmented_view_is_fixed_per_image_and_view_whatever_the_batch():
    images = torch.rand(5, 3, 8, 8, generator=gen(12))
    view = protoclip.AugmentedViewEncoder(Pixels(), 0)
    features = view.encode_images(images)
    order = torch.tensor([3, 1])
    torch.testing.assert_close(view.encode_images(images[order]), features[order])  # batch- and order-free
    torch.testing.assert_close(protoclip.AugmentedViewEncoder(Pixels(), 0).encode_images(images), features)
    clean = Pixels().encode_images(images)
    assert ((features * clean).sum(-1) < 1 - 1e-4).any()  # a view is not the image
    other_view = protoclip.AugmentedViewEncoder(Pixels(), 1).encode_images(images)
    other_seed = protoclip.AugmentedViewEncoder(Pixels(), 0, seed=1).encode_images(images)
    assert not torch.allclose(other_view, features) and not torch.allclose(other_seed, features)
    assert view.feature_dim == Pixels.feature_dim and view.name == "pixels+crop-flip-view0"


def test_augmented_views_are_fingerprinted_apart_and_stored_once(tmp_path):
    from protobench.fewshot.encoders import FeatureCache

    views = [protoclip.AugmentedViewEncoder(Pixels(), v) for v in (0, 1)]
    prints = {Pixels.fingerprint, *(v.fingerprint for v in views),
              protoclip.AugmentedViewEncoder(Pixels(), 0, scale=(0.8, 1.0)).fingerprint}
    assert len(prints) == 4 and views[0].fingerprint == protoclip.AugmentedViewEncoder(Pixels(), 0).fingerprint
    images = torch.rand(4, 3, 8, 8, generator=gen(13))
    first = FeatureCache(tmp_path).encode(views[1], images)
    again = protoclip.AugmentedViewEncoder(Pixels(), 1)
    torch.testing.assert_close(FeatureCache(tmp_path).encode(again, images), first)
    assert again.base.encoded == 0  # read from the store, not encoded again
    with pytest.raises(ValueError, match="view must be"):
        protoclip.AugmentedViewEncoder(Pixels(), -1)


class PromptTable:
    name, feature_dim = "prompts", 2

    def __init__(self, table):
        self.table, self.seen = table, []

    def encode_texts(self, texts):
        self.seen += list(texts)
        return torch.stack([self.table[t] for t in texts])


def test_text_memory_averages_normalised_template_features():
    table = {"a red fox.": torch.tensor([3.0, 0.0]), "b red fox.": torch.tensor([0.0, 0.5]),
             "a cat.": torch.tensor([1.0, 1.0]), "b cat.": torch.tensor([-1.0, 1.0])}
    encoder = PromptTable(table)
    memory = protoclip.text_memory(encoder, ["red_fox", "cat"], ["a {}.", "b {}."])
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(memory, torch.tensor([[s, s], [0.0, 1.0]]))
    assert encoder.seen == ["a red fox.", "b red fox.", "a cat.", "b cat."]
    with pytest.raises(ValueError, match="template"):
        protoclip.text_memory(encoder, ["cat"], ["no placeholder"])


def separable_problem(seed: int, n_classes: int = 4, shots: int = 3, dim: int = 16, noise: float = 0.3):
    """Memory entries and text rows scattered around one random unit centre per class; queries likewise."""
    g = gen(seed)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    labels = torch.arange(n_classes).repeat_interleave(shots)
    memory = F.normalize(centres[labels] + noise * torch.randn(len(labels), dim, generator=g), dim=-1)
    text = F.normalize(centres + noise * torch.randn(n_classes, dim, generator=g), dim=-1)
    query_labels = torch.arange(n_classes).repeat(5)
    query = F.normalize(centres[query_labels] + 0.3 * torch.randn(len(query_labels), dim, generator=g), dim=-1)
    return memory, labels, text, query, query_labels


def test_training_free_inference_leaves_memories_unchanged():
    memory, labels, text, query, _ = separable_problem(0)
    model = ProtoCLIPModel(memory, labels, text)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        p = model(query, 0.5, 7.0)
    p_batched = episode_log_probabilities(memory[None], labels, query[None], text, 0.5, 7.0)[0].exp()
    torch.testing.assert_close(p, p_batched)
    torch.testing.assert_close(p.sum(-1), torch.ones(len(query)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.adapter, torch.nn.Identity)
    with pytest.raises(ValueError, match="cover exactly"):
        ProtoCLIPModel(memory, labels.clamp(max=2), text)


def test_epoch_episodes_visit_every_class_once_with_held_back_entries():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3] + [c for c in range(4, 10) for _ in range(2)])
    for seed in range(5):
        episodes = protoclip.epoch_episodes(labels, 10, gen(seed))
        classes = [sorted(set(labels[e].tolist())) for e in episodes]
        assert sorted(c for group in classes for c in group) == list(range(10))
        # floor(0.2 N) .. floor(0.4 N) - 1 classes, the last episode taking what is left
        assert all(2 <= len(group) <= 3 for group in classes[:-1]) and 1 <= len(classes[-1]) <= 3
        for episode in episodes:
            counts = torch.bincount(labels[episode], minlength=10)
            for c in labels[episode].unique().tolist():
                shots = int((labels == c).sum())
                assert (counts[c] == 1) if shots == 1 else (1 <= counts[c] <= shots - 1)
        assert [e.tolist() for e in episodes] == [e.tolist() for e in protoclip.epoch_episodes(labels, 10, gen(seed))]
    single = protoclip.epoch_episodes(torch.arange(3), 3, gen(0))
    assert sorted(torch.cat(single).tolist()) == [0, 1, 2]


def full_loss(model: ProtoCLIPModel, alpha: float, beta: float) -> float:
    with torch.no_grad():
        p = model(model.memory_features, alpha, beta)
        return proto_clip_loss(p, model.memory_labels, model.image_prototypes(), model.text_prototypes()).total.item()


@pytest.mark.parametrize("adapter", ["conv-2x", "conv-3x", "fc"])
def test_fine_tune_lowers_the_loss_and_stays_finite(adapter):
    memory, labels, text, _, _ = separable_problem(1, noise=0.5)
    torch.manual_seed(0)  # adapter initialisation
    model = ProtoCLIPModel(memory, labels, text, adapter=adapter, train_text_memory=False)
    adapter_before = [p.detach().clone() for p in model.adapter.parameters()]
    before = full_loss(model, 0.5, 5.0)
    record = protoclip.fine_tune(model, 0.5, 5.0, n_epochs=6, generator=gen(2), lr=1e-3)
    assert len(record.losses) == 6 and record.val_accuracies is None and record.selected_epoch == 6
    assert full_loss(model, 0.5, 5.0) < 0.8 * before
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(adapter_before, model.adapter.parameters(), strict=True))
    assert not torch.equal(model.visual_memory, F.normalize(memory, dim=-1))
    torch.testing.assert_close(model.text_memory, text)          # not trained
    torch.testing.assert_close(model.memory_features, memory)    # the fixed queries


def test_fine_tune_trains_the_text_memory_and_keeps_the_best_validated_epoch():
    memory, labels, text, query, query_labels = separable_problem(6, noise=0.6)
    torch.manual_seed(0)
    model = ProtoCLIPModel(memory, labels, text, adapter="fc")
    record = protoclip.fine_tune(model, 0.5, 5.0, n_epochs=8, generator=gen(4), lr=1e-2,
                                 validation=(query, query_labels))
    assert len(record.val_accuracies) == 8
    best = max(record.val_accuracies)
    assert record.val_accuracies.count(best) > 1 and record.val_accuracies[-1] < best, "want a tie, not at the end"
    assert record.selected_epoch == max(i + 1 for i, a in enumerate(record.val_accuracies) if a == best)
    assert protoclip.accuracy(model, query, query_labels, 0.5, 5.0) == pytest.approx(best)
    assert not torch.equal(model.text_memory, text)
    with pytest.raises(ValueError, match="n_epochs"):
        protoclip.fine_tune(model, 0.5, 5.0, n_epochs=0, generator=gen(0))
