"""A short real training run on Omniglot (Vinyals split): ProtoNet learns in about two minutes."""

from __future__ import annotations

import torch

from protobench.fewshot import EpisodeSampler, EpisodeSpec
from protobench.fewshot.datasets import load_omniglot
from protobench.fewshot.evaluation import embed_source, evaluate_cached
from protobench.fewshot.metrics import mean_ci95
from protobench.fewshot.protonet import PrototypicalNetwork
from protobench.fewshot.training import TrainingContext


def test_vinyals_split_sizes(omniglot_root):
    val = load_omniglot(omniglot_root / "omniglot", "val")
    assert val.images.shape == (688 * 20, 1, 28, 28)
    assert len(val.class_names) == 688 and val.class_names[0].endswith("/rot000")
    assert set(val.labels.tolist()) == set(range(688))


def test_short_protonet_training_reaches_90_percent_on_5way_5shot(omniglot_root):
    torch.manual_seed(0)
    root = omniglot_root / "omniglot"
    train, test = load_omniglot(root, "train"), load_omniglot(root, "test")
    learner = PrototypicalNetwork()
    learner.fit(train, EpisodeSpec(20, 5, 5), TrainingContext(n_episodes=120, seed=0, progress=False))
    sampler = EpisodeSampler(test, EpisodeSpec(5, 5, 15), seed=2, n_episodes=200)
    mean, ci95 = mean_ci95(evaluate_cached(learner, embed_source(learner, test), sampler))
    assert mean >= 0.90, f"5-way 5-shot accuracy {mean:.3f} +- {ci95:.3f} after 120 training episodes"
