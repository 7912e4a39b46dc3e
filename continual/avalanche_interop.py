"""Avalanche interop (the optional extra ``avalanche``: ``pip install 'protobench[avalanche]'``).

Three bridges between protobench and Avalanche (avalanche-lib 0.6, Carta et al.):

- :func:`to_avalanche`: a protobench :class:`~protobench.continual.experience.Stream` as an
  Avalanche benchmark (``train_stream`` / ``test_stream``, one experience per protobench
  experience, task labels and classes timeline set). Every experience's dataset is a view of the
  stream's shared tensors (a ``TensorDataset`` over them, subset by the experience's rows; no copy),
  its targets the stream labels; a domain transform (pixel permutation, rotation) becomes a frozen
  per-example Avalanche transform.
- :func:`from_avalanche`: an Avalanche benchmark with tensor examples as a protobench ``Stream``:
  every example read once (eval transform group) into one images tensor and one labels tensor on
  ``device``, experiences as index views into them, the benchmark's classes recorded.
- :class:`AvalancheLearner`: an Avalanche ``SupervisedTemplate`` strategy (``Naive``, ``EWC``,
  ``LwF``) as a protobench :class:`~protobench.continual.learner.ContinualLearner`; the factories
  :func:`avalanche_learner`, :func:`avalanche_naive`, :func:`avalanche_ewc`, :func:`avalanche_lwf`
  build one on a protobench backbone and linear head.

Randomness and determinism. While the wrapper trains (``strategy.train``), the global torch
generators (CPU, and the CUDA device of the strategy) are forked (:func:`torch.random.fork_rng`),
so the caller's global state is left as found, and reseeded at the start of epoch ``e`` with
``context.key("order", e)``: whatever Avalanche draws from them (the shuffling ``RandomSampler``
of its own loader, the seed every ``DataLoader`` iterator draws, dropout) is a pure function of
the context's keys. With ``loader="protobench"`` (default) the wrapper also replaces Avalanche's
train loader by the experience's own mini-batches in the order of ``context.key("order", e)``
(:meth:`ExperienceData.batches`), the order the native baselines use. Avalanche offers no
generator argument for its loaders (``strategy.train(**kwargs)`` forwards only
``num_workers``/``shuffle``/``pin_memory``/``persistent_workers``/``drop_last``); Python's
``random`` and NumPy's global generators are neither used by these strategies nor touched here.

Nothing here imports Avalanche when this module is imported: each function imports it when
called, and says what to install when it is missing.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from protobench.continual.experience import SCENARIOS, Experience, ExperienceData, Stream
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.training import PREDICT_BATCH, Classifier, check_number

INSTALL_HINT = "pip install 'protobench[avalanche]'"
STRATEGIES = ("naive", "ewc", "lwf")
LOADERS = ("protobench", "avalanche")
EVALUATORS = ("none", "default")
CLOCK_COUNTERS = ("train_iterations", "train_exp_counter", "train_exp_epochs", "train_exp_iterations",
                  "train_epoch_iterations", "total_iterations")


def require_avalanche() -> str:
    """Import Avalanche (training and benchmarks) and return its version; ImportError saying what
    to install when avalanche-lib is missing. Silences the import-time notice of ``qpsolvers``
    (an Avalanche dependency) that no QP solver is installed (only the GEM strategy needs one)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
            import avalanche
            import avalanche.benchmarks.scenarios  # noqa: F401
            import avalanche.training  # noqa: F401
    except ImportError as error:
        raise ImportError(f"Avalanche interop needs avalanche-lib, which is not installed: {INSTALL_HINT}") from error
    return avalanche.__version__


# ----------------------------------------------------------------------------------------------
# protobench -> Avalanche


class _PerExample:
    """A batched transform (n, C, H, W) -> (n, C, H, W) applied to one example (C, H, W), as
    Avalanche transforms are (a class, not a closure, so that data-loader workers can pickle it)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(image.unsqueeze(0)).squeeze(0)


def avalanche_dataset(data: ExperienceData, task_label: int):
    """``data`` as an Avalanche ``TaskAwareSupervisedClassificationDataset``: example ``i`` is
    ``(image, stream label, task_label)`` of row ``data.indices[i]``.

    The images are not copied (a ``TensorDataset`` over ``data.images``, subset by the rows); the
    ``targets`` attribute holds the stream labels; ``data.transform``, when set, is a frozen
    transform (applied in the train and the eval group alike).
    """
    require_avalanche()
    from avalanche.benchmarks.utils import (
        AvalancheDataset,
        ConstantSequence,
        DataAttribute,
        DefaultTransformGroups,
        TaskAwareSupervisedClassificationDataset,
        TaskLabels,
    )
    from torch.utils.data import TensorDataset

    rows = data.indices.tolist()
    examples = AvalancheDataset([TensorDataset(data.images, data.labels)], indices=rows)
    attributes = [DataAttribute(data.labels[data.indices].tolist(), "targets"),
                  TaskLabels(ConstantSequence(int(task_label), len(rows)))]
    frozen = None if data.transform is None else DefaultTransformGroups((_PerExample(data.transform), None))
    return TaskAwareSupervisedClassificationDataset([examples], data_attributes=attributes,
                                                    frozen_transform_groups=frozen)


def avalanche_task_label(stream: Stream, experience: Experience) -> int:
    """The Avalanche task label of ``experience``: its index in a task-aware stream (class splits),
    0 in a domain-incremental or online stream (one task, as Avalanche's class-incremental
    benchmarks have)."""
    return experience.index if stream.task_aware and experience.task_id is not None else 0


def to_avalanche(stream: Stream):
    """``stream`` as an Avalanche benchmark (``CLScenario``) with a ``train_stream`` and a
    ``test_stream`` of ``len(stream)`` experiences each.

    Experience ``i`` of either stream holds protobench experience ``i``'s train or test examples
    in their order (:func:`avalanche_dataset`: the shared tensors, no copy; targets are stream
    labels), task label :func:`avalanche_task_label`, and Avalanche's classes timeline
    (``classes_in_this_experience``, ``classes_seen_so_far``, ...) in stream labels. Tensors stay
    on their device (Avalanche's loaders pin memory when the strategy's device is CUDA: pass
    ``pin_memory=False`` to ``strategy.train`` when the stream is already on the GPU).
    """
    require_avalanche()
    from avalanche.benchmarks.scenarios import benchmark_from_datasets, with_classes_timeline, with_task_labels

    train = [avalanche_dataset(e.train, avalanche_task_label(stream, e)) for e in stream]
    test = [avalanche_dataset(e.test, avalanche_task_label(stream, e)) for e in stream]
    return with_classes_timeline(with_task_labels(benchmark_from_datasets(train=train, test=test)))


# ----------------------------------------------------------------------------------------------
# Avalanche -> protobench


def _gather(dataset, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example of an Avalanche dataset in its eval transform group: images (n, C, H, W)
    float32 and labels (n,) int64, on the CPU."""
    data = dataset.eval()
    images, labels = [], []
    for i in range(len(data)):
        example = data[i]
        image, label = example[0], example[1]
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
            kind = (f"a {image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor)
                    else type(image).__name__)
            raise ValueError(f"{where}: example {i} is {kind}; protobench needs float (C, H, W) tensors "
                             "(give the dataset a ToTensor-like eval transform)")
        images.append(image.detach().to("cpu", torch.float32))
        labels.append(int(label))
    if not images:
        raise ValueError(f"{where} has no examples")
    if len({tuple(image.shape) for image in images}) > 1:
        raise ValueError(f"{where}: examples have different shapes; protobench needs one (C, H, W)")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _experience_classes(train_labels: list[torch.Tensor], order: Sequence[int] | None) -> list[list[int]]:
    """Each experience's classes (source label values), in the benchmark's class order when it
    has one (``classes_order`` of Avalanche's NC benchmarks), else sorted."""
    rank = {int(c): r for r, c in enumerate(order)} if order is not None else {}
    return [sorted({int(c) for c in labels.tolist()}, key=lambda c: (rank.get(c, math.inf), c))
            for labels in train_labels]


def _is_class_split(scenario: str, classes: list[list[int]]) -> bool:
    """Whether the experiences split the classes (disjoint) rather than share them (identical);
    ValueError when that contradicts ``scenario`` or the classes do neither."""
    sets = [set(c) for c in classes]
    shared = all(s == sets[0] for s in sets)
    disjoint = sum(map(len, sets)) == len(set().union(*sets))
    if scenario in ("class-incremental", "task-incremental") and not disjoint:
        raise ValueError(f"a {scenario} stream needs experiences with disjoint classes, these share some: "
                         f"{classes} (use scenario='domain-incremental' when every experience has every class)")
    if scenario == "domain-incremental" and not shared:
        raise ValueError(f"a domain-incremental stream needs the same classes in every experience, got {classes}")
    if scenario == "online" and not (shared or disjoint):
        raise ValueError(f"experiences' classes overlap without being the same: {classes}")
    return scenario != "domain-incremental" and not (scenario == "online" and shared and len(sets) > 1)


def from_avalanche(benchmark, name: str, *, scenario: str = "class-incremental", device: str = "cpu") -> Stream:
    """An Avalanche benchmark (``train_stream`` and ``test_stream`` of equal length, tensor
    examples) as a protobench :class:`Stream` named ``name``.

    Every example is read once, in the datasets' eval transform group (no random training
    augmentation baked in; protobench learners augment themselves), into one images tensor
    (float32, (N, C, H, W)) and one labels tensor on ``device``: rows ``[train 0, train 1, ...,
    test 0, test 1, ...]``; experience ``i``'s train and test data are index views of its rows.

    Labels: in a class split (class-, task-incremental, or online over disjoint classes) the
    ``k``-th class of the concatenated class order gets stream label ``k``; each experience's
    classes are those of its training examples, ordered as the benchmark's ``classes_order`` when
    it has one, else sorted, and recorded as ``class_order`` (Avalanche's label values). In a
    domain-incremental stream (the same classes in every experience) the sorted classes get
    labels ``0 .. n - 1`` and ``class_order`` is None. Task ids are the experience indices (None
    online); ``seed`` is None (the order is the benchmark's).
    """
    require_avalanche()
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    streams = getattr(benchmark, "streams", {})
    if "train" not in streams or "test" not in streams:
        raise ValueError(f"the benchmark needs a train and a test stream, it has {', '.join(streams) or 'none'}")
    train_experiences, test_experiences = list(streams["train"]), list(streams["test"])
    if len(train_experiences) != len(test_experiences) or not train_experiences:
        raise ValueError(f"the benchmark needs one test experience per train experience, it has "
                         f"{len(train_experiences)} train and {len(test_experiences)} test experiences")
    train = [_gather(e.dataset, f"train experience {i}") for i, e in enumerate(train_experiences)]
    test = [_gather(e.dataset, f"test experience {i}") for i, e in enumerate(test_experiences)]
    classes = _experience_classes([labels for _, labels in train], getattr(benchmark, "classes_order", None))
    for i, (_, labels) in enumerate(test):
        unseen = sorted({int(c) for c in labels.tolist()} - set(classes[i]))
        if unseen:
            raise ValueError(f"test experience {i} has classes {unseen} that its train experience lacks")
    class_split = _is_class_split(scenario, classes)
    source_classes = [c for experience in classes for c in experience] if class_split else classes[0]
    if min(source_classes) < 0:
        raise ValueError(f"class labels must be >= 0, got {min(source_classes)}")
    to_stream = torch.full((max(source_classes) + 1,), -1, dtype=torch.int64)
    to_stream[torch.tensor(source_classes)] = torch.arange(len(source_classes))

    images = torch.cat([x for x, _ in train + test]).to(device)
    labels = to_stream[torch.cat([y for _, y in train + test])].to(device)
    sizes = [len(y) for _, y in train + test]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    n = len(train)

    def view(k: int) -> ExperienceData:
        return ExperienceData(images, labels, torch.arange(starts[k], starts[k] + sizes[k], device=device))

    experiences = tuple(
        Experience(index=i, task_id=None if scenario == "online" else i,
                   classes=tuple(sorted(int(to_stream[c]) for c in classes[i])), train=view(i), test=view(n + i))
        for i in range(n))
    return Stream(name=name, scenario=scenario, experiences=experiences, n_classes=len(source_classes),
                  input_shape=tuple(images.shape[1:]), class_order=tuple(map(tuple, classes)) if class_split else None,
                  seed=None, task_aware=class_split)


# ----------------------------------------------------------------------------------------------
# Avalanche strategies as protobench learners


def _seed_global_generators(key: int, device: torch.device) -> None:
    """Seed the global CPU generator, and ``device``'s when it is a CUDA device, with ``key``
    (call only inside :func:`torch.random.fork_rng`, which restores them)."""
    torch.default_generator.manual_seed(key % 2**63)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(key % 2**63)


@contextmanager
def _forked_global_generators(device: torch.device) -> Iterator[None]:
    """The global CPU generator (and ``device``'s, when CUDA) as they were on entry, restored on exit."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        yield


class _KeyedBatches:
    """Avalanche's train loader, replaced: one iteration is one epoch of ``data``'s mini-batches
    ``[images, stream labels, task labels]`` in the order of ``context.key("order", epoch)``
    (:meth:`ExperienceData.batches`), epochs counted from 0 by the iterations."""

    def __init__(self, data: ExperienceData, batch_size: int, context: ContinualContext, task_label: int) -> None:
        self.data, self.batch_size, self.context, self.task_label = data, batch_size, context, task_label
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        for x, y in self.data.batches(self.batch_size, key=self.context.key("order", epoch), epoch=epoch):
            yield [x, y, torch.full_like(y, self.task_label)]


class _TrainingHooks:
    """The wrapper's Avalanche plugin (Avalanche calls the callbacks a plugin has): seeds the global
    generators per epoch, replaces the train loader (``loader="protobench"``), sums the loss
    (what the strategy minimises, penalties included) without reading it back per step, and
    advances the progress bar."""

    def __init__(self, loader: str) -> None:
        self.loader = loader
        self.begin(None, None, None, 0)

    def begin(self, data: ExperienceData | None, context: ContinualContext | None, bar, task_label: int) -> None:
        """Start an experience: its data, keys, progress bar and task label."""
        self.data, self.context, self.bar, self.task_label = data, context, bar, task_label
        self.epoch = self.steps = self.examples = 0
        self.total: torch.Tensor | None = None
        self.epoch_examples = 0
        self.last_loss = math.nan

    def before_training_exp(self, strategy, **kwargs) -> None:
        if self.loader == "protobench":
            strategy.dataloader = _KeyedBatches(self.data, strategy.train_mb_size, self.context, self.task_label)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        _seed_global_generators(self.context.key("order", self.epoch), strategy.device)
        self.total = torch.zeros((), device=strategy.device)
        self.epoch_examples = 0

    def after_training_iteration(self, strategy, **kwargs) -> None:
        n = len(strategy.mb_y)
        self.total.add_(strategy.loss.detach().sum(), alpha=n)
        self.epoch_examples += n
        self.examples += n
        self.steps += 1
        self.bar.update(1)

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self.epoch += 1
        self.last_loss = self.total.item() / max(self.epoch_examples, 1)
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}")

    def record(self, seconds: float) -> dict:
        """The experience's training record (the native baselines' fields)."""
        return {"epochs": self.epoch, "steps": self.steps, "examples": self.examples, "loss": self.last_loss,
                "seconds": round(seconds, 3)}


def _training_experience(dataset, index: int):
    """A one-experience Avalanche stream's experience over ``dataset`` (task labels set), numbered ``index``."""
    from avalanche.benchmarks.scenarios import DatasetExperience, EagerCLStream, with_task_labels

    experience = with_task_labels(EagerCLStream("train", [DatasetExperience(dataset=dataset)]))[0]
    experience.current_experience = index
    return experience


class AvalancheLearner:
    """An Avalanche ``SupervisedTemplate`` strategy as a protobench continual learner.

    ``train_experience`` turns the experience's training data into an Avalanche experience
    (:func:`avalanche_dataset`, task label ``experience.task_id`` or 0) and calls
    ``strategy.train(experience, eval_streams=[])`` (no evaluation inside; with the strategy's
    ``train_epochs`` and ``train_mb_size``), seeding as the module docstring says. ``predict``
    returns the model's logits (one head: ``task_id`` is not used). ``state_dict`` holds the
    model, the optimiser (Avalanche keeps one optimiser, momentum included, across experiences),
    the strategy's clock, EWC's parameters and importances, LwF's teacher and its classes, so a
    resumed run trains exactly as an uninterrupted one.

    Supported plugins: those of ``Naive``, ``EWC`` and ``LwF`` (``EWCPlugin``, ``LwFPlugin``) and
    Avalanche's evaluation, periodic-evaluation and clock plugins; TypeError for any other (its
    state could not be saved). ``loader``: ``"protobench"`` (mini-batches of the experience's own
    keyed order) or ``"avalanche"`` (Avalanche's own loader, shuffled by the seeded global generator).
    """

    uses_task_id = False  # predict ignores task_id: the runner scores both protocols from one call

    version = "1"
    backbone_name: str | None = None
    pretraining: str | None = None

    def __init__(self, strategy, n_classes: int, *, backbone_name: str | None = None, pretraining: str | None = None,
                 loader: str = "protobench") -> None:
        avalanche_version = require_avalanche()
        from avalanche.training.plugins import EvaluationPlugin, EWCPlugin, LwFPlugin
        from avalanche.training.plugins.clock import Clock
        from avalanche.training.templates import SupervisedTemplate
        from avalanche.training.templates.base_sgd import PeriodicEval

        if not isinstance(strategy, SupervisedTemplate):
            raise TypeError(f"strategy must be an Avalanche SupervisedTemplate (Naive, EWC, LwF, ...), "
                            f"got {type(strategy).__name__}")
        if loader not in LOADERS:
            raise ValueError(f"loader must be one of {', '.join(LOADERS)}, got {loader!r}")
        check_number("n_classes", n_classes, low=1, integer=True)
        known = (EvaluationPlugin, PeriodicEval, Clock, EWCPlugin, LwFPlugin)
        unknown = [type(p).__name__ for p in strategy.plugins if not isinstance(p, known)]
        if unknown:
            raise TypeError(f"AvalancheLearner cannot save the state of plugin(s) {', '.join(unknown)} (a resumed "
                            f"run would differ); it supports {', '.join(k.__name__ for k in known)}")
        self.strategy, self.n_classes = strategy, n_classes
        self.version = f"{type(self).version}+avalanche-{avalanche_version}"
        self.backbone_name, self.pretraining = backbone_name, pretraining
        self._hooks = _TrainingHooks(loader)
        plugins = strategy.plugins
        plugins.insert(plugins.index(strategy.clock), self._hooks)  # Avalanche's clock must stay last
        self._ewc = next((p for p in plugins if isinstance(p, EWCPlugin)), None)
        self._lwf = next((p.lwf for p in plugins if isinstance(p, LwFPlugin)), None)

    @property
    def device(self) -> torch.device:
        return self.strategy.device

    def train_experience(self, experience: Experience, context: ContinualContext) -> dict:
        """Train the strategy on ``experience.train``; the record has ``epochs``, ``steps``,
        ``examples`` (all epochs), ``loss`` (mean per-example loss of the last epoch, penalties
        included) and ``seconds``."""
        data = experience.train
        if len(data) == 0:
            raise ValueError(f"experience {experience.index} has no training examples")
        task_label = experience.task_id or 0
        dataset = avalanche_dataset(data, task_label)
        steps = self.strategy.train_epochs * math.ceil(len(data) / self.strategy.train_mb_size)
        pin_memory = data.device.type == "cpu" and self.device.type == "cuda"  # CUDA tensors cannot be pinned
        started = time.perf_counter()
        with _forked_global_generators(self.device), context.progress_bar(steps) as bar:
            self._hooks.begin(data, context, bar, task_label)
            self.strategy.train(_training_experience(dataset, experience.index), eval_streams=[],
                                pin_memory=pin_memory)
        return self._hooks.record(time.perf_counter() - started)

    def predict(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        """Float32 logits (n, n_classes) on the strategy's device, the model in eval mode."""
        model = self.strategy.model
        model.eval()
        with torch.no_grad():
            return torch.cat([model(chunk.to(self.device)).float() for chunk in x.split(PREDICT_BATCH)])

    def state_dict(self) -> dict:
        """Model, optimiser, clock counters and the EWC / LwF plugins' state: tensors and plain
        containers only (``torch.load(weights_only=True)`` reads it)."""
        state: dict[str, Any] = {
            "model": self.strategy.model.state_dict(),
            "optimizer": self.strategy.optimizer.state_dict(),
            "clock": {name: int(getattr(self.strategy.clock, name)) for name in CLOCK_COUNTERS},
        }
        if self._ewc is not None:
            state["ewc"] = {field: {int(t): {k: p.data for k, p in params.items()}
                                    for t, params in getattr(self._ewc, field).items()}
                            for field in ("saved_params", "importances")}
        if self._lwf is not None:
            teacher = self._lwf.prev_model
            state["lwf"] = {"teacher": None if teacher is None else teacher.state_dict(),
                            "teacher_training": bool(teacher is not None and teacher.training),
                            "expcount": int(self._lwf.expcount),
                            "prev_classes_by_task": {int(t): sorted(map(int, c))
                                                     for t, c in self._lwf.prev_classes_by_task.items()}}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output into this learner (built like the saved one);
        ValueError when ``state`` lacks a part this learner has."""
        from avalanche.training.utils import ParamData

        needed = {"model", "optimizer", "clock"} | ({"ewc"} if self._ewc else set()) | ({"lwf"} if self._lwf else set())
        missing = sorted(needed - set(state))
        if missing:
            raise ValueError(f"not a state of this AvalancheLearner: it lacks {', '.join(missing)}")
        strategy, device = self.strategy, self.device
        strategy.model.load_state_dict(state["model"])
        strategy.optimizer.load_state_dict(state["optimizer"])
        # Avalanche resets the optimiser's state on its first experience unless it knows the
        # parameters already (optimized_param_id); an uninterrupted run keeps it across experiences.
        strategy.optimized_param_id = dict(strategy.model.named_parameters())
        for name in CLOCK_COUNTERS:
            setattr(strategy.clock, name, int(state["clock"][name]))
        if self._ewc is not None:
            for field in ("saved_params", "importances"):
                setattr(self._ewc, field, defaultdict(dict, {
                    int(t): {k: ParamData(k, tuple(v.shape), device=device, init_tensor=v.to(device))
                             for k, v in params.items()}
                    for t, params in state["ewc"][field].items()}))
        if self._lwf is not None:
            saved = state["lwf"]
            teacher = None
            if saved["teacher"] is not None:
                teacher = copy.deepcopy(strategy.model)
                teacher.load_state_dict(saved["teacher"])
                teacher.train(saved["teacher_training"])
            self._lwf.prev_model = teacher
            self._lwf.expcount = int(saved["expcount"])
            self._lwf.prev_classes_by_task = defaultdict(set, {int(t): set(c)
                                                               for t, c in saved["prev_classes_by_task"].items()})


def _evaluator(name: str):
    """Avalanche's evaluation plugin: ``"none"`` (no metrics, no loggers: silent) or ``"default"``
    (Avalanche's default: accuracy and loss, printed by its interactive logger)."""
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.plugins.evaluation import default_evaluator

    if name == "default":
        return default_evaluator()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin()


def avalanche_learner(input_shape: tuple[int, ...], device: str, n_classes: int, *, strategy: str = "naive",
                      backbone: str = "mlp", epochs: int = 1, batch_size: int = 64, lr: float = 0.01,
                      momentum: float = 0.0, ewc_lambda: float | None = None, alpha: float | None = None,
                      temperature: float | None = None, evaluator: str = "none",
                      loader: str = "protobench") -> AvalancheLearner:
    """Avalanche's Naive, EWC or LwF strategy on a protobench backbone and linear head, as a continual learner.

    The model is :func:`~protobench.continual.backbones.build_backbone` ``(backbone, input_shape)``
    plus a linear head of ``n_classes`` outputs (column k = stream label k), trained with SGD
    (``lr``, ``momentum``; one optimiser for the whole stream, as Avalanche does) and plain
    cross-entropy over every output (Avalanche masks nothing), ``epochs`` passes of mini-batches of
    ``batch_size`` per experience. ``strategy="ewc"``: ``ewc_lambda`` (default 100.0, the native
    EWC's), Avalanche's "separate" mode (one penalty per past experience). ``strategy="lwf"``:
    ``alpha`` (default 1.0) and ``temperature`` (default 2.0). A parameter of another strategy is
    an error. ``evaluator``: ``"none"`` (silent) or ``"default"`` (Avalanche's default evaluator and
    interactive logger, for comparisons with Avalanche as its users run it). ``loader``: see
    :class:`AvalancheLearner`. Initial weights come from the global generator (the runner seeds it).
    """
    require_avalanche()
    from avalanche.training import EWC, LwF, Naive

    from protobench.continual.backbones import build_backbone

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {', '.join(EVALUATORS)}, got {evaluator!r}")
    foreign = {"ewc_lambda": ewc_lambda, "alpha": alpha, "temperature": temperature}
    own = {"naive": (), "ewc": ("ewc_lambda",), "lwf": ("alpha", "temperature")}[strategy]
    stray = [name for name, value in foreign.items() if value is not None and name not in own]
    if stray:
        raise ValueError(f"strategy {strategy!r} takes no {', '.join(stray)}")
    check_number("n_classes", n_classes, low=1, integer=True)
    check_number("epochs", epochs, low=1, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True)
    check_number("lr", lr, low_open=True)
    check_number("momentum", momentum)
    model = Classifier(build_backbone(backbone, tuple(input_shape)), n_classes).to(device)
    common = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
              "criterion": nn.CrossEntropyLoss(), "train_mb_size": batch_size, "train_epochs": epochs,
              "eval_mb_size": batch_size, "device": device, "evaluator": _evaluator(evaluator)}
    if strategy == "ewc":
        ewc_lambda = 100.0 if ewc_lambda is None else ewc_lambda
        check_number("ewc_lambda", ewc_lambda)
        built = EWC(ewc_lambda=ewc_lambda, mode="separate", **common)
    elif strategy == "lwf":
        alpha = 1.0 if alpha is None else alpha
        temperature = 2.0 if temperature is None else temperature
        check_number("alpha", alpha)
        check_number("temperature", temperature, low_open=True)
        built = LwF(alpha=alpha, temperature=temperature, **common)
    else:
        built = Naive(**common)
    return AvalancheLearner(built, n_classes, backbone_name=backbone, loader=loader)


def avalanche_naive(input_shape: tuple[int, ...], device: str, n_classes: int, **params) -> AvalancheLearner:
    """Avalanche's Naive strategy (fine-tuning) on a protobench backbone and linear head (:func:`avalanche_learner`)."""
    return avalanche_learner(input_shape, device, n_classes, strategy="naive", **params)


def avalanche_ewc(input_shape: tuple[int, ...], device: str, n_classes: int, **params) -> AvalancheLearner:
    """Avalanche's EWC strategy on a protobench backbone and linear head (:func:`avalanche_learner`)."""
    return avalanche_learner(input_shape, device, n_classes, strategy="ewc", **params)


def avalanche_lwf(input_shape: tuple[int, ...], device: str, n_classes: int, **params) -> AvalancheLearner:
    """Avalanche's LwF strategy on a protobench backbone and linear head (:func:`avalanche_learner`)."""
    return avalanche_learner(input_shape, device, n_classes, strategy="lwf", **params)
