"""The continual protocol: a unit is (stream, method configuration, seed); the learner trains
experience by experience and every experience's test set is scored after each one.

Suite keys of a ``[[methods]]`` entry: ``label`` (unique in the suite; defaults to ``method``),
``method`` (a registered continual method), ``params`` (passed to the method's factory),
``split`` (``"test"``, the default, or ``"val"``: every experience's evaluation set is then a
held-out part of its training data, the rest trains; used to choose hyperparameters, never the
test data) and ``chosen_on`` (free text recorded in the result: where the params were chosen).

For each unit the runner

1. builds the benchmark's stream with the unit's ``stream`` key (class order, permutations or
   angles) on the run's device, and the learner with its ``init`` key;
2. scores the untrained learner on every experience (``b``);
3. for each experience ``i``: ``learner.train_experience(experience, context)`` (the context's
   keys come from the unit's ``train`` key and ``i``), then scores every experience's evaluation
   set, filling row ``i`` of the accuracy matrix ``R`` (task-agnostic: argmax over the classes
   seen so far) and, for class-split streams, of the task-aware matrix (argmax over that
   experience's classes); then saves the learner's state, the rows and the training records
   atomically (``OUT/checkpoints/<unit>__<hash>.partial.pt``);
4. writes one result file with ``R``, ``b`` and the metrics of
   :mod:`protobench.continual.metrics`.

A run killed after experience ``i`` resumes from the saved state at experience ``i + 1`` and
gives the same result as an uninterrupted run (the learner's state and the keys are all there
is). Before any experience the untrained model has seen no class: ``b`` takes the argmax over
every class of the stream.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from protobench.benchmarks.registry import Benchmark, build_method, get_benchmark, get_method, keyword_parameters
from protobench.benchmarks.results import (
    config_hash,
    environment,
    method_record,
    peak_rss_mib,
    run_header,
)
from protobench.benchmarks.suite import Unit, check_keys
from protobench.continual.experience import ExperienceData, Stream
from protobench.continual.learner import ContinualContext
from protobench.continual.metrics import DEFINITIONS, TASK_AWARE_AVERAGE_ACCURACY_DEFINITION, continual_metrics
from protobench.continual.metrics import average_accuracy as average_accuracy_of
from protobench.fewshot.counter_rng import role_key
from protobench.fewshot.training import CheckpointError, load_torch, one_line, save_atomic, set_aside

if TYPE_CHECKING:
    from protobench.benchmarks.runner import RunContext

ENTRY_KEYS = ("label", "method", "params", "split", "chosen_on")
SPLITS = ("test", "val")
EVAL_BATCH = 1000  # examples per predict call when scoring
CHECKPOINT_FORMAT = "protobench-continual-checkpoint/1"
KEY_ROLES = {"train": "train", "stream": "stream", "init": "init"}  # result field -> role


@dataclass(frozen=True)
class ContinualEntry:
    """One method of a continual suite."""

    label: str
    method: str
    params: dict
    split: str = "test"
    chosen_on: str | None = None
    tests: tuple = ()  # a continual unit has no test settings; kept for the runner's common view

    def recorded_params(self) -> dict:
        """The params a result records: the factory's and the evaluation split."""
        return {**self.params, "split": self.split}


@dataclass(frozen=True)
class ContinualOutput:
    """The one result file a continual unit writes."""

    file_name: str
    config_hash: str


def unit_keys(unit: Unit) -> dict[str, int]:
    """The root seed and the key of each role a continual unit uses (recorded as ``seeds``)."""
    return {"seed": unit.seed, **{field: role_key(role, unit.seed) for field, role in KEY_ROLES.items()}}


def finite_record(record: dict) -> tuple[dict, list[str]]:
    """A learner's training record with every non-finite float (a diverged loss) replaced by None, and the
    names of the fields replaced (listed under ``non_finite`` in the record, which then stays valid JSON)."""
    replaced: list[str] = []

    def clean(value, name: str):
        if isinstance(value, float) and not math.isfinite(value):
            replaced.append(name)
            return None
        if isinstance(value, dict):
            return {key: clean(item, f"{name}.{key}" if name else str(key)) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item, f"{name}[{i}]") for i, item in enumerate(value)]
        return value

    cleaned = clean(record, "")
    if replaced:
        cleaned["non_finite"] = replaced
    return cleaned, replaced


class ContinualProtocol:
    """Continual suites: parse, check without data, and run units into result files."""

    kind = "continual"

    # --- suite settings -------------------------------------------------------------------
    def parse_tests(self, tables: Any, where: str) -> tuple:
        if tables:
            raise ValueError(f"{where}: a continual suite has no test settings (every experience's test set "
                             "is scored after each experience)")
        return ()

    def parse_entry(self, table: Any, default_tests: tuple, where: str) -> ContinualEntry:
        check_keys(table, ENTRY_KEYS, where)
        if not isinstance(table.get("method"), str):
            raise ValueError(f"{where}: missing method (a registered continual method name)")
        params = table.get("params", {})
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params: expected a table of the method's parameters")
        if "split" in params:
            raise ValueError(f"{where}.params: 'split' is an entry key, not a method parameter")
        label = table.get("label", table["method"])
        if not isinstance(label, str) or not label:
            raise ValueError(f"{where}.label: expected a non-empty string")
        split = table.get("split", "test")
        if split not in SPLITS:
            raise ValueError(f"{where}.split: expected one of {', '.join(SPLITS)}, got {split!r}")
        chosen_on = table.get("chosen_on")
        if chosen_on is not None and (not isinstance(chosen_on, str) or not 0 < len(chosen_on) <= 256):
            raise ValueError(f"{where}.chosen_on: expected a short text (at most 256 characters)")
        return ContinualEntry(label, table["method"], dict(params), split, chosen_on)

    def untrained_entry(self, name: str, suite) -> ContinualEntry:
        """A registered method the suite does not list, run with its default params."""
        return ContinualEntry(name, name, {})

    # --- checks before any data is loaded ---------------------------------------------------
    def check(self, suite) -> list[str]:
        """Everything wrong with ``suite`` that can be known without loading data."""
        problems = []
        for name in suite.benchmarks:
            try:
                benchmark = get_benchmark(name)
            except ValueError as error:
                problems.append(str(error))
                continue
            if benchmark.kind != self.kind:
                problems.append(f"benchmark {name!r} is a {benchmark.kind} benchmark, not {self.kind}")
                continue
            problems += [p for entry in suite.methods for p in self._entry_problems(entry, benchmark)]
        return list(dict.fromkeys(problems))

    def _entry_problems(self, entry: ContinualEntry, benchmark: Benchmark) -> list[str]:
        where = f"method {entry.label!r} on benchmark {benchmark.name!r}"
        try:
            method = get_method(entry.method)
        except ValueError as error:
            return [f"{where}: {error}"]
        if method.kind != self.kind:
            return [f"{where}: {entry.method!r} is a {method.kind} method, not a continual one"]
        known = keyword_parameters(method.factory)
        unknown = sorted(set(entry.params) - known) if known is not None else []
        if unknown:
            allowed = sorted(known - {"input_shape", "device", "n_classes"})
            return [f"{where}: unknown param(s) {', '.join(unknown)}; {entry.method!r} takes {', '.join(allowed)}"]
        try:
            inspect.signature(method.factory).bind(benchmark.input_shape, "cpu", n_classes=2, **entry.params)
        except TypeError as error:
            return [f"{where}: params {entry.params} do not fit the method's factory ({error})"]
        return []

    @staticmethod
    def describe(entry: ContinualEntry) -> str:
        """One line for ``protobench ls``: the method, its params and the evaluation split."""
        params = ", ".join(f"{key}={value}" for key, value in entry.params.items()) or "default params"
        return f"{entry.method} ({params}), evaluated on {entry.split}"

    @staticmethod
    def headline(result: dict) -> str:
        """One line for a result: final average accuracy (and task-aware), forgetting, in percent."""
        metrics = result["metrics"]
        line = f"{result['benchmark']['protocol']}: A = {100 * metrics['average_accuracy']['value']:.2f} %"
        if "task_aware_average_accuracy" in metrics:
            line += f" (task-aware {100 * metrics['task_aware_average_accuracy']['value']:.2f} %)"
        if metrics["forgetting"]["value"] is not None:
            line += f", forgetting {100 * metrics['forgetting']['value']:.2f}"
        return line

    # --- units ----------------------------------------------------------------------------
    def _config(self, unit: Unit, threads: int) -> dict:
        entry = unit.entry
        return {"kind": self.kind, "benchmark": unit.benchmark, "method": entry.method,
                "params": entry.recorded_params(), "seed": unit.seed, "threads": threads}

    def outputs(self, unit: Unit, threads: int) -> list[ContinualOutput]:
        """The unit's one result file."""
        split = "" if unit.entry.split == "test" else f"__{unit.entry.split}"
        return [ContinualOutput(f"{unit.benchmark}__{unit.entry.label}{split}__seed{unit.seed}.json",
                                config_hash(self._config(unit, threads)))]

    def run_unit(self, unit: Unit, outputs: list[ContinualOutput], data,
                 run: RunContext) -> Iterator[tuple[ContinualOutput, dict]]:
        """Train the unit's learner through its stream (resuming after the last saved experience)
        and yield its one (output, result)."""
        keys = unit_keys(unit)
        stream = data.make_stream(keys["stream"], run.device, unit.entry.split)
        learner = self._build(unit, data, stream, keys, run)
        checkpoint = run.checkpoints(unit.name, outputs[0].config_hash).partial
        progress = self._resume(learner, checkpoint, unit, run)
        if progress is None:
            started = time.perf_counter()
            untrained = self._score(learner, stream, seen=None, run=run)[0]
            progress = {"done": 0, "untrained": untrained, "rows": [], "task_aware_rows": [], "records": [],
                        "train_seconds": 0.0, "eval_seconds": time.perf_counter() - started}
        for experience in stream.experiences[progress["done"]:]:
            context = ContinualContext(run.device, keys["train"], experience.index, run.progress,
                                       f"{unit.name}: experience {experience.index + 1}/{len(stream)}")
            started = time.perf_counter()
            with run.precision():
                record = learner.train_experience(experience, context)
            progress["train_seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            seen = sorted({c for e in stream.experiences[:experience.index + 1] for c in e.classes})
            rows = self._score(learner, stream, seen=seen, run=run, task_aware=stream.task_aware)
            progress["rows"].append(rows[0])
            if stream.task_aware:
                progress["task_aware_rows"].append(rows[1])
            progress["eval_seconds"] += time.perf_counter() - started
            record, non_finite = finite_record(record)
            if non_finite:
                run.say(f"{unit.name}: experience {experience.index + 1}: training diverged ({', '.join(non_finite)} "
                        "not finite, recorded as null); lower lr or the penalty's weight")
            progress["records"].append(record)
            progress["done"] = experience.index + 1
            if progress["done"] < len(stream):
                save_atomic({"format": CHECKPOINT_FORMAT, "learner": learner.state_dict(), "progress": progress},
                            checkpoint)
            run.say(f"{unit.name}: experience {progress['done']}/{len(stream)} accuracies "
                    + " ".join(f"{100 * a:.1f}" for a in progress["rows"][-1]))
        yield outputs[0], continual_result(unit=unit, output=outputs[0], benchmark=data, stream=stream,
                                           learner=learner, progress=progress, keys=keys, device=run.device)
        checkpoint.unlink(missing_ok=True)

    def _resume(self, learner, checkpoint, unit: Unit, run: RunContext) -> dict | None:
        """The progress saved after the last finished experience, with ``learner`` restored to it;
        None when there is none. An unusable file is set aside with a notice (start over)."""
        if not checkpoint.is_file():
            return None
        try:
            saved = load_torch(checkpoint, run.device)
            if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{checkpoint}: not a continual checkpoint ({CHECKPOINT_FORMAT} expected)")
            learner.load_state_dict(saved["learner"])
        except Exception as error:  # unreadable, truncated, another model's state
            moved = set_aside(checkpoint)
            run.notice(f"{checkpoint}: {one_line(error)}; set aside as {moved.name}, {unit.name} starts over")
            return None
        run.say(f"{unit.name}: resuming after experience {saved['progress']['done']}")
        return saved["progress"]

    @staticmethod
    def _build(unit: Unit, data, stream: Stream, keys: dict, run: RunContext) -> Any:
        """The unit's learner as its factory makes it, its weights drawn with the ``init`` key."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(keys["init"] % 2**63)
            return build_method(unit.entry.method, stream.input_shape, run.device, n_classes=stream.n_classes,
                                **unit.entry.params)

    @staticmethod
    def _score(learner, stream: Stream, seen, run: RunContext, task_aware: bool = False) -> list[list[float]]:
        """Accuracy on every experience's evaluation set: the row of the argmax over ``seen`` classes
        (None: every class), then, with ``task_aware``, the row of the argmax over each experience's
        own classes given its task id."""
        rows = [[], []] if task_aware else [[]]
        for experience in stream.experiences:
            choices = [(seen or range(stream.n_classes), None)]
            if task_aware:
                choices.append((experience.classes, experience.task_id))
            for row, value in zip(rows, accuracies(learner, experience.test, choices, run), strict=True):
                row.append(value)
        return rows


def accuracies(learner, data: ExperienceData, choices, run: RunContext) -> list[float]:
    """For each ``(allowed, task_id)`` of ``choices``, the fraction of ``data`` whose label is the argmax of
    ``learner.predict(x, task_id=task_id)`` over the ``allowed`` columns.

    A learner whose ``uses_task_id`` attribute is False (its logits do not depend on the task id) is
    asked once per batch for all choices; any other once per batch and choice.
    """
    allowed_sets = [torch.as_tensor(list(allowed), dtype=torch.long, device=data.device) for allowed, _ in choices]
    once = getattr(learner, "uses_task_id", True) is False
    correct = [0] * len(choices)
    with torch.no_grad(), run.precision():
        for images, labels in data.batches(EVAL_BATCH):
            shared = learner.predict(images, task_id=None) if once else None
            for number, ((_, task_id), allowed) in enumerate(zip(choices, allowed_sets, strict=True)):
                logits = shared if once else learner.predict(images, task_id=task_id)
                columns = logits.index_select(1, allowed.to(logits.device))
                predicted = allowed[columns.argmax(dim=1).to(data.device)]
                correct[number] += int((predicted == labels).sum())
    return [count / len(data) for count in correct]


def continual_result(*, unit: Unit, output: ContinualOutput, benchmark, stream: Stream, learner,
                     progress: dict, keys: dict, device: str) -> dict:
    """A schema-conformant continual result for a unit that finished its stream."""
    entry = unit.entry
    R, b = progress["rows"], progress["untrained"]
    evidence = {"accuracy_matrix": R, "untrained_accuracy": b}
    metrics = {name: {"value": value, "definition": DEFINITIONS[name]}
               for name, value in continual_metrics(R, b).items()}
    if stream.task_aware:
        evidence["task_aware_accuracy_matrix"] = progress["task_aware_rows"]
        metrics["task_aware_average_accuracy"] = {"value": average_accuracy_of(progress["task_aware_rows"]),
                                                  "definition": TASK_AWARE_AVERAGE_ACCURACY_DEFINITION}
    split = "test" if entry.split == "test" else "val (held out from train)"
    return {
        **run_header("continual", unit.name, output.config_hash),
        "method": method_record(entry.method, entry.label, entry.recorded_params(), learner),
        "benchmark": {"name": benchmark.name, "dataset": benchmark.dataset, "dataset_checksum": benchmark.checksum,
                      "split": split, "protocol": f"{stream.scenario}, {len(stream)} experiences",
                      "stream_spec": stream.spec()},
        "seeds": keys,
        "evidence": evidence,
        "metrics": metrics,
        "budget": {
            "train_wall_seconds": round(progress["train_seconds"], 2),
            "eval_wall_seconds": round(progress["eval_seconds"], 2),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
            "processes": 1,
        },
        "training": {"chosen_on": entry.chosen_on or "not tuned: the suite's params",
                     "experiences": progress["records"]},
        "environment": environment(device),
    }

