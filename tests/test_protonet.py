"""Prototypical Networks: the classifier, batched evaluation equal to the per-episode loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protobench.fewshot import EpisodeSampler, EpisodeSpec, VariableEpisodeSpec
from protobench.fewshot.backbones import Conv4
from protobench.fewshot.datasets import TensorSource, load_digits_source
from protobench.fewshot.evaluation import embed_source, episode_task, evaluate_cached, evaluate_per_episode
from protobench.fewshot.metrics import mean_ci95
from protobench.fewshot.progress import progress_bar
from protobench.fewshot.protonet import PrototypicalNetwork, prototype_logits
from protobench.fewshot.training import TrainingContext


def test_prototype_logits_are_negative_squared_distances_to_class_means():
    generator = torch.Generator().manual_seed(0)
    support = torch.randn(2, 6, 4, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    query = torch.randn(2, 5, 4, generator=generator)
    logits = prototype_logits(support, labels, 3, query)
    for b in range(2):
        prototypes = torch.stack([support[b, labels == c].mean(0) for c in range(3)])
        expected = -((query[b, :, None, :] - prototypes[None]) ** 2).sum(-1)
        torch.testing.assert_close(logits[b], expected, rtol=1e-5, atol=1e-5)


def test_conv4_output_sizes():
    assert Conv4(1)(torch.zeros(2, 1, 28, 28)).shape == (2, 64)
    assert Conv4(3)(torch.zeros(2, 3, 84, 84)).shape == (2, 1600)


@pytest.fixture(scope="module")
def digits_and_learner():
    torch.manual_seed(0)
    learner = PrototypicalNetwork(in_channels=1)
    return load_digits_source(), learner


@pytest.mark.parametrize("spec", [EpisodeSpec(5, 1, 15), EpisodeSpec(5, 5, 10), VariableEpisodeSpec(max_way=10)])
def test_batched_cached_evaluation_equals_per_episode_loop(digits_and_learner, spec):
    source, learner = digits_and_learner
    sampler = EpisodeSampler(source, spec, seed=11, n_episodes=60)
    cached = evaluate_cached(learner, embed_source(learner, source), sampler, chunk=16)
    bar = progress_bar(60, "score", "episode", enabled=False)
    looped = evaluate_per_episode(learner, source, sampler.episodes(), progress=bar)
    assert cached.shape == (60,) and bar.n == 60
    np.testing.assert_array_equal(cached, looped)
    assert 0.2 < cached.mean() < 1.0  # an untrained Conv-4 is better than chance on digits


def test_short_training_lowers_loss_and_raises_accuracy_on_training_digits():
    torch.manual_seed(0)
    train = load_digits_source().subset(range(5))
    sampler = EpisodeSampler(train, EpisodeSpec(5, 1, 15), seed=3, n_episodes=100)
    learner = PrototypicalNetwork()
    before = evaluate_cached(learner, embed_source(learner, train), sampler).mean()
    record = learner.fit(train, EpisodeSpec(5, 5, 10), TrainingContext(n_episodes=40, seed=0, checkpoint_every=20,
                                                                        progress=False))
    after = evaluate_cached(learner, embed_source(learner, train), sampler).mean()
    assert after > before + 0.05
    assert record.episodes == 40 and record.selected_episode == 40
    assert [point["episode"] for point in record.curve] == [40]  # no validation, no checkpoint path: the end


def test_training_with_validation_keeps_the_best_weights_and_records_the_curve():
    torch.manual_seed(0)
    train = load_digits_source().subset(range(5))
    scores = iter([0.5, 0.9, 0.7])  # the second validation is the best

    def validate(learner):
        return next(scores)

    record = PrototypicalNetwork().fit(train, EpisodeSpec(5, 1, 5), TrainingContext(
        n_episodes=30, seed=0, validate=validate, validate_every=10, progress=False))
    assert [point["episode"] for point in record.curve] == [10, 20, 30]
    assert [point["val_accuracy"] for point in record.curve] == [0.5, 0.9, 0.7]
    assert record.selected_episode == 20


class _KilledAfterFirstCheckpoint(TrainingContext):
    """A context whose run dies right after it saved its first checkpoint."""

    def save_checkpoint(self, state: dict) -> None:
        super().save_checkpoint(state)
        raise KeyboardInterrupt


def test_training_resumes_from_checkpoint_with_the_same_weights(tmp_path):
    images = torch.rand(60, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    source = TensorSource(images, np.repeat(np.arange(6), 10))
    spec = EpisodeSpec(3, 2, 2)

    def train(context):
        torch.manual_seed(0)
        learner = PrototypicalNetwork(lr_step=3)
        return learner, learner.fit(source, spec, context)

    straight, _ = train(TrainingContext(n_episodes=8, seed=5, progress=False))
    checkpoint = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train(_KilledAfterFirstCheckpoint(n_episodes=8, seed=5, checkpoint_path=checkpoint, checkpoint_every=4,
                                          progress=False))
    assert torch.load(checkpoint, weights_only=True)["episode"] == 4
    resumed, record = train(TrainingContext(n_episodes=8, seed=5, checkpoint_path=checkpoint, checkpoint_every=4,
                                            progress=False))
    assert [point["episode"] for point in record.curve] == [4, 8]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_predict_gets_the_episode_task_and_equals_cached_scoring(digits_and_learner):
    source, learner = digits_and_learner
    sampler = EpisodeSampler(source, EpisodeSpec(5, 2, 3), seed=4, n_episodes=3)
    for episode in sampler.episodes():
        task = episode_task(source, episode, source.class_names)
        assert task.class_names == tuple(source.class_names[c] for c in episode.classes)
        assert task.n_way == 5 and learner.predict(task).shape == (15, 5)


def test_mean_ci95_definition():
    values = np.array([0.5, 0.7, 0.9, 1.0])
    mean, ci = mean_ci95(values)
    assert mean == pytest.approx(0.775)
    assert ci == pytest.approx(1.96 * np.std(values, ddof=1) / 2)
    with pytest.raises(ValueError, match="at least two"):
        mean_ci95([0.5])
