"""Shared fixtures: the real-data root, small trained-free learners and toy continual streams."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from protobench.benchmarks.catalog import BenchmarkData
from protobench.benchmarks.protocols.fewshot import EpisodeSetting, FewShotEntry, Output, fewshot_result
from protobench.benchmarks.suite import Unit
from protobench.continual.experience import Experience, ExperienceData, Stream
from protobench.fewshot import EpisodeSampler, EpisodeSpec

DATA_ENV = "PROTOBENCH_DATA"


def real_data_root(dataset: str) -> Path:
    """``$PROTOBENCH_DATA/<dataset>``; skips when absent, but fails under CI=true."""
    root = os.environ.get(DATA_ENV)
    path = Path(root) / dataset if root else None
    if path is not None and path.is_dir():
        return Path(root)
    reason = f"real data not found: set {DATA_ENV} to a folder holding {dataset}/ (../shared/data here)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def omniglot_root() -> Path:
    return real_data_root("omniglot")


def make_fewshot_result(method: str, n_shot: int, accuracies: np.ndarray, seed: int = 0,
                        pretraining: str | None = None, params: dict | None = None) -> dict:
    """A valid few-shot result of ``method`` on benchmark "toy" (5-way ``n_shot``-shot 15-query)."""
    spec = EpisodeSpec(5, n_shot, 15)
    test = EpisodeSetting(spec, len(accuracies))
    entry = FewShotEntry(label=method, method=method, params=dict(params or {}), train=None, val=None, tests=(test,))
    unit = Unit("toy", entry, seed)
    data = BenchmarkData(name="toy", dataset="toy", sources={}, checksum=None, input_shape=(1, 28, 28))
    sampler = EpisodeSampler(np.repeat(np.arange(10), 25), spec, seed=unit.keys["episodes"],
                             n_episodes=len(accuracies))
    learner = SimpleNamespace(version="1", backbone_name=None, pretraining=pretraining)
    output = Output(test, f"toy__{method}__{spec.key}__seed{seed}.json", "sha256:" + "0" * 64)
    training = {"episodes": 0, "selected_episode": 0, "train_seconds": 0.0, "curve": []}
    return fewshot_result(unit=unit, output=output, benchmark=data, learner=learner, sampler=sampler,
                          accuracies=accuracies, training=training, eval_seconds=0.1, device="cpu")


@pytest.fixture
def seeded_one_thread():
    """Initial weights come from the global generator: seed it inside a fork, leaving it as it was.
    One thread: the toy models are too small for more to help on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    torch.set_num_threads(threads)


def toy_class_incremental_stream(images: torch.Tensor, labels: torch.Tensor, train_per_class: int,
                                 seed: int) -> Stream:
    """Split ``images`` (grouped by class in ``labels``, the first ``train_per_class`` of each class for
    training, the rest for test) into experiences of two consecutive classes; stream label = class."""
    n_classes = int(labels.max()) + 1
    per_class = len(labels) // n_classes
    is_train = (torch.arange(len(labels)) % per_class) < train_per_class
    experiences, classes_per_experience = [], []
    for index in range(n_classes // 2):
        classes = (2 * index, 2 * index + 1)
        rows = (labels == classes[0]) | (labels == classes[1])
        train, test = (ExperienceData(images, labels, torch.nonzero(rows & split).flatten())
                       for split in (is_train, ~is_train))
        experiences.append(Experience(index, index, classes, train, test))
        classes_per_experience.append(classes)
    return Stream("toy", "class-incremental", tuple(experiences), n_classes, tuple(images.shape[1:]),
                  tuple(classes_per_experience), seed)
