"""Zero-shot and Tip-Adapter baselines: logits against hand-computed values, the code's search grid, the search
against a brute-force loop, and Tip-Adapter-F lowering its loss without touching the given keys."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from protobench.fewshot import tip_adapter
from protobench.fewshot.protoclip import proto_clip_probabilities
from protobench.fewshot.tip_adapter import search_tip_adapter, tip_adapter_logits, tip_grid, zero_shot_logits


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_zero_shot_logits_by_hand():
    logits = zero_shot_logits(torch.tensor([[3.0, 4.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.6, -0.8]]))
    torch.testing.assert_close(logits, torch.tensor([[60.0, 80.0, -28.0]]))


def test_zero_shot_ranks_as_proto_clip_with_text_alone():
    g = gen(0)
    query, text = torch.randn(2, 9, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    p = proto_clip_probabilities(F.normalize(query, dim=-1), torch.zeros(2, 4, 5), F.normalize(text, dim=-1),
                                 0.0, 3.0)
    assert torch.equal(zero_shot_logits(query, text).argmax(-1), p.argmax(-1))


def test_tip_adapter_logits_by_hand():
    text = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    logits = tip_adapter_logits(torch.tensor([[2.0, 0.0]]), torch.eye(2), torch.tensor([0, 1]), text, alpha=2.0,
                                beta=3.0)
    # zero-shot 100 * [0, 1]; affinity [1, 0]; cache exp(-3 (1 - affinity)) = [1, e^-3]
    torch.testing.assert_close(logits, torch.tensor([[2.0, 100 + 2 * math.exp(-3)]]))
    keys = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    logits = tip_adapter_logits(torch.tensor([[1.0, 0.0]]), keys, torch.tensor([0, 0, 1]), text, alpha=1.0, beta=1.0)
    torch.testing.assert_close(logits, torch.tensor([[1 + math.exp(-0.4), 100 + math.exp(-1)]]))
    batched = tip_adapter_logits(torch.tensor([[[1.0, 0.0]]]).expand(2, -1, -1), keys.expand(2, -1, -1),
                                 torch.tensor([[0, 0, 1], [0, 0, 1]]), text.expand(2, -1, -1), 1.0, 1.0)
    torch.testing.assert_close(batched, logits.expand(2, -1, -1))


def test_tip_grid_is_the_codes():
    betas, alphas = tip_grid()
    assert len(betas) == 200 and len(alphas) == 20
    assert betas[0] == pytest.approx(0.1) and betas[-1] == pytest.approx(199 * 6.9 / 200 + 0.1)
    assert alphas[0] == pytest.approx(0.1) and alphas[-1] == pytest.approx(19 * 2.9 / 20 + 0.1)


def few_shot_problem(seed: int, n_classes: int = 3, shots: int = 4, dim: int = 8, n_query: int = 30):
    """Keys and queries around one unit centre per class; text prototypes, as CLIP's, close to one common
    direction and weakly (noisily) class-dependent, so that the zero-shot logits differ by a few units."""
    g = gen(seed)
    centres = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    key_labels = torch.arange(n_classes).repeat_interleave(shots)
    keys = F.normalize(centres[key_labels] + 0.6 * torch.randn(len(key_labels), dim, generator=g), dim=-1)
    common = F.normalize(torch.randn(dim, generator=g), dim=0)
    text = F.normalize(common + 0.03 * (centres + 0.8 * torch.randn(n_classes, dim, generator=g)), dim=-1)
    labels = torch.randint(n_classes, (n_query,), generator=g)
    query = F.normalize(centres[labels] + 0.6 * torch.randn(n_query, dim, generator=g), dim=-1)
    return keys, key_labels, text, query, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_search_picks_what_a_brute_force_loop_picks(seed):
    keys, key_labels, text, query, labels = few_shot_problem(seed)
    betas, alphas = tip_grid((7.0, 3.0), (25, 8))
    found = search_tip_adapter(query, labels, keys, key_labels, text, betas=betas, alphas=alphas)
    best, pick = 0.0, (0.0, 0.0)
    for beta in betas:
        for alpha in alphas:
            logits = tip_adapter_logits(query, keys, key_labels, text, alpha, beta)
            accuracy = (logits.argmax(-1) == labels).float().mean().item()
            if accuracy > best:
                best, pick = accuracy, (alpha, beta)
    assert (found.alpha, found.beta) == pick and found.accuracy == pytest.approx(best)
    assert found.accuracies.shape == (25, 8)


def train_loss(keys, key_labels, text, features, labels, alpha, beta) -> float:
    with torch.no_grad():
        return F.cross_entropy(tip_adapter_logits(features, keys, key_labels, text, alpha, beta), labels).item()


def test_fine_tune_keys_lowers_the_loss_and_leaves_the_given_keys():
    keys, key_labels, text, query, labels = few_shot_problem(2)
    views = torch.stack([F.normalize(keys + 0.2 * torch.randn(keys.shape, generator=gen(v)), dim=-1)
                         for v in range(2)])
    original = keys.clone()
    before = train_loss(keys, key_labels, text, views.flatten(0, 1), key_labels.repeat(2), 3.0, 5.0)
    trained, record = tip_adapter.fine_tune_keys(keys, key_labels, text, views, key_labels, 3.0, 5.0, n_epochs=20,
                                                 generator=gen(3), lr=1e-2, batch_size=5)
    assert torch.equal(keys, original) and torch.isfinite(trained).all() and not torch.equal(trained, keys)
    assert len(record.losses) == 20 and record.selected_epoch == 20 and record.val_accuracies is None
    after = train_loss(trained, key_labels, text, views.flatten(0, 1), key_labels.repeat(2), 3.0, 5.0)
    assert after < 0.8 * before
    again, _ = tip_adapter.fine_tune_keys(keys, key_labels, text, views, key_labels, 3.0, 5.0, n_epochs=20,
                                          generator=gen(3), lr=1e-2, batch_size=5)
    torch.testing.assert_close(again, trained)


def test_fine_tune_keys_keeps_the_first_best_validated_epoch():
    keys, key_labels, text, query, labels = few_shot_problem(5)
    trained, record = tip_adapter.fine_tune_keys(keys, key_labels, text, keys, key_labels, 3.0, 5.0, n_epochs=6,
                                                 generator=gen(5), lr=5e-2, validation=(query, labels))
    best = max(record.val_accuracies)
    assert record.val_accuracies.count(best) > 1, "the problem should have tied best epochs"
    assert record.selected_epoch == record.val_accuracies.index(best) + 1
    accuracy = (tip_adapter_logits(query, trained, key_labels, text, 3.0, 5.0).argmax(-1) == labels).float().mean()
    assert accuracy.item() == pytest.approx(best)
    with pytest.raises(ValueError, match="labels"):
        tip_adapter.fine_tune_keys(keys, key_labels, text, keys, key_labels[:3], 3.0, 5.0, generator=gen(0))
