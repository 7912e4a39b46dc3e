"""Avalanche interop: Stream <-> Avalanche benchmark round trips, an Avalanche-made benchmark read as
a Stream, Naive/EWC/LwF wrapped as continual learners (training, shapes, resume, seeding, global RNG).

Tests that need avalanche-lib are skipped when it is not installed, and fail under CI=true (CI
installs the extra); the import-isolation and missing-package tests run either way.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from protobench.continual import streams
from protobench.continual.avalanche_interop import (
    INSTALL_HINT,
    AvalancheLearner,
    avalanche_ewc,
    avalanche_learner,
    avalanche_lwf,
    avalanche_naive,
    from_avalanche,
    require_avalanche,
    to_avalanche,
)
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.finetune import FineTune
from protobench.fewshot.datasets import TensorSource
from protobench.fewshot.learner import missing_members

SHAPE = (1, 6, 6)
N_CLASSES = 6
CLASS_ORDER = [4, 1, 0, 5, 2, 3]
FAST = {"batch_size": 16, "epochs": 2, "lr": 0.05}
STRATEGIES = {"naive": {}, "ewc": {"ewc_lambda": 5.0}, "lwf": {"alpha": 1.0, "temperature": 2.0}}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the toy models are too small for more to help on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def avalanche_version() -> str:
    """avalanche-lib's version; skip when it is missing, but fail under CI=true."""
    try:
        return require_avalanche()
    except ImportError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{error} (CI installs the extra)")
        pytest.skip(str(error))


def toy_sources(seed: int = 0) -> tuple[TensorSource, TensorSource]:
    """Six classes of (1, 6, 6) images, class c brighter by 0.4 c; 20 train and 8 test images per class."""
    generator = torch.Generator().manual_seed(seed)

    def source(per_class: int) -> TensorSource:
        labels = torch.arange(N_CLASSES).repeat(per_class)
        images = torch.rand(len(labels), *SHAPE, generator=generator) + 0.4 * labels.view(-1, 1, 1, 1)
        return TensorSource(images, labels.numpy())

    return source(20), source(8)


TRAIN, TEST = toy_sources()
SPLIT = streams.class_incremental("toy", TRAIN, TEST, 3, class_order=CLASS_ORDER)


def context(index: int, seed: int = 7) -> ContinualContext:
    return ContinualContext(device="cpu", seed=seed, experience_index=index, progress=False)


def build(strategy: str, **params) -> AvalancheLearner:
    """A wrapped strategy with its initial weights drawn as the runner draws them (a forked, seeded generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        return avalanche_learner(SHAPE, "cpu", N_CLASSES, strategy=strategy, **{**FAST, **STRATEGIES[strategy],
                                                                                 **params})


def all_test_images() -> torch.Tensor:
    return torch.cat([experience.test.tensors()[0] for experience in SPLIT])


def assert_same_experiences(expected, actual) -> None:
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual, strict=True):
        assert a.classes == b.classes
        for split in ("train", "test"):
            images_a, labels_a = getattr(a, split).tensors()
            images_b, labels_b = getattr(b, split).tensors()
            assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


# ----------------------------------------------------------------------------------------------
# Import isolation (run without avalanche-lib too)


def test_importing_protobench_does_not_import_avalanche():
    code = ("import sys; import protobench.continual.avalanche_interop; "
            "from protobench.benchmarks.registry import methods; methods(); "
            "assert 'avalanche' not in sys.modules, 'avalanche was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_missing_avalanche_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "avalanche", None)  # `import avalanche` now raises ImportError
    with pytest.raises(ImportError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        require_avalanche()
    with pytest.raises(ImportError, match="protobench"):
        avalanche_naive(SHAPE, "cpu", N_CLASSES)


# ----------------------------------------------------------------------------------------------
# Streams


def test_to_avalanche_keeps_experiences_task_labels_and_tensors(avalanche_version):
    benchmark = to_avalanche(SPLIT)
    assert len(benchmark.train_stream) == len(benchmark.test_stream) == 3
    for experience, train, test in zip(SPLIT, benchmark.train_stream, benchmark.test_stream, strict=True):
        assert train.task_label == test.task_label == experience.index  # a class split is task-aware
        assert set(train.classes_in_this_experience) == set(experience.classes)
        images, labels = experience.train.tensors()
        assert len(train.dataset) == len(images)
        assert list(train.dataset.targets) == labels.tolist()
        for i in (0, len(images) - 1):
            image, label, task = train.dataset[i]
            assert torch.equal(image, images[i]) and int(label) == int(labels[i]) and task == experience.index
            # a view of the stream's shared images, not a copy
            assert image.untyped_storage().data_ptr() == SPLIT[0].train.images.untyped_storage().data_ptr()


def test_round_trip_class_split(avalanche_version):
    back = from_avalanche(to_avalanche(SPLIT), "toy", scenario="class-incremental")
    assert_same_experiences(SPLIT, back)
    assert back.n_classes == N_CLASSES and back.input_shape == SHAPE and back.task_aware
    assert [e.task_id for e in back] == [0, 1, 2]
    assert back.class_order == ((0, 1), (2, 3), (4, 5))  # Avalanche holds stream labels, not the source's
    assert back[0].train.images is back[2].test.images  # one tensor, experiences are index views


def test_round_trip_domain_and_online(avalanche_version):
    permuted = streams.permuted("toy", TRAIN, TEST, 2, seed=3)
    back = from_avalanche(to_avalanche(permuted), "toy", scenario="domain-incremental")
    assert_same_experiences(permuted, back)  # the per-example transform equals the batched one
    assert back.class_order is None and not back.task_aware
    assert [e.classes for e in back] == [tuple(range(N_CLASSES))] * 2

    online = streams.online(SPLIT)
    benchmark = to_avalanche(online)
    assert [e.task_label for e in benchmark.train_stream] == [0, 0, 0]  # no task ids online
    back = from_avalanche(benchmark, "toy", scenario="online")
    assert_same_experiences(online, back)
    assert [e.task_id for e in back] == [None, None, None] and back.task_aware


def test_avalanche_made_benchmark_reads_as_stream(avalanche_version):
    """nc_benchmark over tensors with a fixed class order; image i is filled with i, so each gathered
    row says which source example it is."""
    from avalanche.benchmarks import nc_benchmark
    from torch.utils.data import TensorDataset

    n_train, n_test = 48, 24
    train_labels, test_labels = torch.arange(n_train) % 4, torch.arange(n_test) % 4
    train_images = torch.arange(n_train, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    test_images = 100 + torch.arange(n_test, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    benchmark = nc_benchmark(TensorDataset(train_images, train_labels), TensorDataset(test_images, test_labels),
                             n_experiences=2, task_labels=False, fixed_class_order=[3, 1, 0, 2])
    stream = from_avalanche(benchmark, "nc", scenario="class-incremental")
    assert stream.class_order == ((3, 1), (0, 2))
    assert [e.classes for e in stream] == [(0, 1), (2, 3)]
    assert stream.n_classes == 4 and stream.input_shape == (1, 2, 2) and stream.seed is None
    stream_label = {3: 0, 1: 1, 0: 2, 2: 3}
    for experience, group in zip(stream, stream.class_order, strict=True):
        for data, labels, offset in ((experience.train, train_labels, 0), (experience.test, test_labels, 100)):
            images, got = data.tensors()
            rows = (images[:, 0, 0, 0] - offset).long()
            expected_rows = np.flatnonzero(np.isin(labels.numpy(), group))
            assert sorted(rows.tolist()) == expected_rows.tolist()
            assert got.tolist() == [stream_label[int(labels[r])] for r in rows]


def test_from_avalanche_checks_the_scenario(avalanche_version):
    from avalanche.benchmarks.scenarios import benchmark_from_datasets
    from avalanche.benchmarks.utils import (
        ConstantSequence,
        DataAttribute,
        TaskAwareSupervisedClassificationDataset,
        TaskLabels,
    )
    from torch.utils.data import TensorDataset

    labels = torch.arange(12) % 3
    images = torch.rand(12, 1, 2, 2, generator=torch.Generator().manual_seed(1))

    def dataset(shift: float):
        return TaskAwareSupervisedClassificationDataset(
            [TensorDataset(images + shift, labels)],
            data_attributes=[DataAttribute(labels.tolist(), "targets"), TaskLabels(ConstantSequence(0, 12))])

    benchmark = benchmark_from_datasets(train=[dataset(0), dataset(5)], test=[dataset(0), dataset(5)])
    stream = from_avalanche(benchmark, "domains", scenario="domain-incremental")
    assert stream.class_order is None and [e.classes for e in stream] == [(0, 1, 2), (0, 1, 2)]
    assert torch.equal(stream[1].train.tensors()[0], images + 5) and torch.equal(stream[1].test.tensors()[1], labels)
    with pytest.raises(ValueError, match="disjoint classes"):
        from_avalanche(benchmark, "domains", scenario="class-incremental")
    with pytest.raises(ValueError, match="scenario must be one of"):
        from_avalanche(benchmark, "domains", scenario="split")


# ----------------------------------------------------------------------------------------------
# Learners


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_wrapped_strategy_trains_and_predicts(avalanche_version, strategy):
    learner = build(strategy)
    assert missing_members(learner, "continual") == ""
    assert learner.version.endswith(f"avalanche-{avalanche_version}") and learner.backbone_name == "mlp"
    before = learner.predict(all_test_images())
    cpu_state = torch.get_rng_state()
    for experience in SPLIT:
        record = learner.train_experience(experience, context(experience.index))
        assert record["epochs"] == 2 and record["examples"] == 2 * len(experience.train)
        assert record["steps"] == 2 * -(-len(experience.train) // 16) and np.isfinite(record["loss"])
    assert torch.equal(torch.get_rng_state(), cpu_state)  # the global generator is left as found
    logits = learner.predict(all_test_images())
    assert logits.shape == (len(all_test_images()), N_CLASSES) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all() and not torch.equal(logits, before)
    # fine-tuning with no masking ends up predicting the last experience's classes
    if strategy == "naive":
        assert set(logits.argmax(1).tolist()) <= set(SPLIT[2].classes)


@pytest.mark.parametrize("loader", ["protobench", "avalanche"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_resumed_wrapper_predicts_as_uninterrupted(avalanche_version, strategy, loader):
    """State saved after experience 0 (through torch.save / torch.load(weights_only=True)), loaded
    into a fresh wrapper that trains experiences 1 and 2: identical predictions. Loading the model
    weights alone (momentum reset, no EWC importances or LwF teacher) differs."""
    params = {"momentum": 0.9, "loader": loader}
    uninterrupted = build(strategy, **params)
    for experience in SPLIT:
        uninterrupted.train_experience(experience, context(experience.index))
    first = build(strategy, **params)
    first.train_experience(SPLIT[0], context(0))
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed, weights_only = build(strategy, **params), build(strategy, **params)
    resumed.load_state_dict(state)
    weights_only.strategy.model.load_state_dict(state["model"])
    for experience in SPLIT[1:]:
        resumed.train_experience(experience, context(experience.index))
        weights_only.train_experience(experience, context(experience.index))
    x = all_test_images()
    assert torch.equal(resumed.predict(x), uninterrupted.predict(x))
    assert not torch.equal(weights_only.predict(x), uninterrupted.predict(x))


@pytest.mark.parametrize("loader", ["protobench", "avalanche"])
def test_training_is_a_function_of_the_keys(avalanche_version, loader):
    """Same keys: identical runs (Avalanche's own loader included, shuffled by the seeded global
    generator); another seed: another batch order, other weights."""
    x = all_test_images()

    def trained(seed: int) -> torch.Tensor:
        learner = build("naive", loader=loader)
        for experience in SPLIT:
            learner.train_experience(experience, context(experience.index, seed))
        return learner.predict(x)

    assert torch.equal(trained(7), trained(7))
    assert not torch.equal(trained(7), trained(8))


def test_protobench_loader_matches_the_native_finetune(avalanche_version):
    """On a domain experience (every class seen, so the native output mask is all zeros) and the
    first experience (a fresh optimiser in both), Avalanche's Naive with the keyed loader takes the
    same SGD steps on the same mini-batches as protobench's FineTune: bit-identical weights."""
    permuted = streams.permuted("toy", TRAIN, TEST, 2, seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        native = FineTune(SHAPE, "cpu", N_CLASSES, **FAST)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        wrapped = avalanche_naive(SHAPE, "cpu", N_CLASSES, **FAST)
    native_record = native.train_experience(permuted[0], context(0))
    wrapped_record = wrapped.train_experience(permuted[0], context(0))
    x = permuted[0].test.tensors()[0]
    assert torch.equal(native.predict(x), wrapped.predict(x))
    assert wrapped_record["loss"] == pytest.approx(native_record["loss"], rel=1e-6)  # summed differently


@pytest.mark.filterwarnings("ignore:No loggers specified")  # Replay(evaluator=None): Avalanche's own notice
def test_factories_and_checks(avalanche_version, capsys):
    for factory, strategy in ((avalanche_naive, "Naive"), (avalanche_ewc, "EWC"), (avalanche_lwf, "LwF")):
        with torch.random.fork_rng(devices=[]):
            assert type(factory(SHAPE, "cpu", N_CLASSES).strategy).__name__ == strategy
    with pytest.raises(ValueError, match="takes no ewc_lambda"):
        avalanche_naive(SHAPE, "cpu", N_CLASSES, ewc_lambda=1.0)
    with pytest.raises(ValueError, match="strategy must be one of"):
        avalanche_learner(SHAPE, "cpu", N_CLASSES, strategy="gem")
    with pytest.raises(ValueError, match="loader must be one of"):
        avalanche_learner(SHAPE, "cpu", N_CLASSES, loader="fast")

    from avalanche.training import Replay

    model = torch.nn.Linear(36, N_CLASSES)
    replay = Replay(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), mem_size=10,
                    criterion=torch.nn.CrossEntropyLoss(),
                    evaluator=None)
    with pytest.raises(TypeError, match="ReplayPlugin"):
        AvalancheLearner(replay, N_CLASSES)

    silent = build("naive")
    capsys.readouterr()
    silent.train_experience(SPLIT[0], context(0))
    assert capsys.readouterr().out == ""
    verbose = build("naive", evaluator="default")  # Avalanche's default evaluator and interactive logger
    verbose.train_experience(SPLIT[0], context(0))
    assert "Top1_Acc_Epoch" in capsys.readouterr().out
