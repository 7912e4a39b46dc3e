"""The method registry: learners checked against their protocol, suggestions for unknown names."""

from __future__ import annotations

import pytest
import torch

from protobench.benchmarks import registry
from protobench.benchmarks.registry import ContractError, build_method, get_benchmark, get_method, register_method
from protobench.fewshot.learner import EmbeddingLearner, PredictingLearner, TaskBatch, missing_members


class EmbedsButCannotScore:
    version = "1"
    backbone_name = None
    pretraining = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class HalfTrainable(EmbedsButCannotScore):
    def score(self, support, support_labels, query, task: TaskBatch) -> torch.Tensor:
        return query @ support.transpose(1, 2)

    def fit(self, train_source, spec, context):
        return None


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_methods", dict(registry.methods()))


def test_a_learner_class_missing_a_member_is_refused_at_registration(clean_registry):
    with pytest.raises(ContractError, match=r"missing score \(EmbeddingLearner\) or predict"):
        register_method("no-score")(EmbedsButCannotScore)

    def factory(input_shape, device) -> HalfTrainable:
        return HalfTrainable()

    with pytest.raises(ContractError, match="missing state_dict, load_state_dict"):
        register_method("half-trainable")(factory)
    assert "no-score" not in registry.methods() and "half-trainable" not in registry.methods()


def test_an_unannotated_factory_is_checked_when_first_built(clean_registry):
    register_method("unannotated")(lambda input_shape, device: EmbedsButCannotScore())
    with pytest.raises(ContractError, match="method 'unannotated'.*missing score"):
        build_method("unannotated", (1, 28, 28), "cpu")


def test_builtin_learners_satisfy_their_protocols():
    learner = build_method("protonet", (1, 28, 28), "cpu")
    assert isinstance(learner, EmbeddingLearner) and isinstance(learner, PredictingLearner)
    assert missing_members(learner) == ""


def test_unknown_names_get_a_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'protonet'"):
        get_method("protonett")
    with pytest.raises(ValueError, match="did you mean 'omniglot-subset'"):
        get_benchmark("omniglot-subsets")
    with pytest.raises(ValueError, match="unknown method 'zzz'; known:"):
        get_method("zzz")
