"""The few-shot protocol: episode settings, meta-training with validation, batched evaluation
on the test episodes, and the few-shot result body.

Suite keys of a ``[[methods]]`` entry: ``label`` (unique in the suite; defaults to ``method``),
``method`` (a registered name), ``params`` (passed to the method's factory), ``train`` (episode
setting, ``episodes``, optional ``checkpoint_every``), ``val`` (episode setting, ``episodes``,
``every``), ``tests`` (episode settings with ``episodes``) and ``chosen_on`` (optional free text,
recorded in the result's ``training.chosen_on``: where the params were chosen). An episode setting is fixed
(``n_way``, ``n_shot``, ``n_query``) or, with ``kind = "variable"``, a Meta-Dataset
:class:`~protobench.fewshot.episodes.VariableEpisodeSpec` (its fields optional).

Each unit writes one result file per test setting, named by the benchmark, the method label,
the spec's canonical key and the seed. A result is reused on resume only when its
``run.config_hash`` matches: the benchmark, method, params, training, validation and test
settings, seed and the CPU thread count (which changes floating-point results).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from protobench.benchmarks.distributed import barrier, gather_concatenated, shard, world
from protobench.benchmarks.registry import Benchmark, build_method, get_benchmark, get_method
from protobench.benchmarks.results import (
    config_hash,
    environment,
    method_record,
    peak_rss_mib,
    run_header,
    write_json_atomic,
)
from protobench.benchmarks.suite import Unit, check_keys
from protobench.fewshot.encoders import FeatureCache
from protobench.fewshot.episodes import EpisodeSpec, VariableEpisodeSpec
from protobench.fewshot.evaluation import class_names_of, embed_source, evaluate, evaluate_cached, evaluate_per_episode
from protobench.fewshot.learner import EmbeddingLearner, TrainableLearner
from protobench.fewshot.metrics import CI95_DEFINITION, MEAN_DEFINITION, mean_ci95
from protobench.fewshot.progress import progress_bar
from protobench.fewshot.sampler import EpisodeSampler
from protobench.fewshot.training import CheckpointError, TrainingContext, one_line, set_aside, state_signature

if TYPE_CHECKING:
    from protobench.benchmarks.runner import Checkpoints, RunContext

EVAL_CHUNK = 64  # episodes scored per batched call; shards are aligned to it
FIXED_KEYS = ("n_way", "n_shot", "n_query")
VARIABLE_KEYS = ("min_way", "max_way", "max_query", "max_support", "max_support_per_class")
SETTING_KEYS = ("kind", *FIXED_KEYS, *VARIABLE_KEYS, "episodes")
ENTRY_KEYS = ("label", "method", "params", "train", "val", "retrain", "tests", "chosen_on")
MAX_CHOSEN_ON = 256  # characters
TRAIN_OPTIONS = {"checkpoint_every": 100}
VAL_OPTIONS = {"every": 500}


@dataclass(frozen=True)
class EpisodeSetting:
    """``episodes`` episodes of ``spec``; ``options`` holds the role's extra keys (with defaults)."""

    spec: EpisodeSpec | VariableEpisodeSpec
    episodes: int
    options: dict = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Any, where: str, options: dict | None = None) -> EpisodeSetting:
        """Parse a TOML table; ``options`` maps the extra keys this role accepts to their defaults."""
        options = options or {}
        check_keys(table, (*SETTING_KEYS, *options), where)
        kind = table.get("kind", "fixed")
        if kind not in ("fixed", "variable"):
            raise ValueError(f"{where}: kind must be 'fixed' or 'variable', got {kind!r}")
        spec_keys = FIXED_KEYS if kind == "fixed" else VARIABLE_KEYS
        wrong = sorted(set(table) & set(VARIABLE_KEYS if kind == "fixed" else FIXED_KEYS))
        if wrong:
            raise ValueError(f"{where}: {', '.join(wrong)} do not apply to a {kind} episode setting")
        missing = [key for key in (*(FIXED_KEYS if kind == "fixed" else ()), "episodes") if key not in table]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        values = {key: table[key] for key in spec_keys if key in table}
        for key, value in (*values.items(), ("episodes", table["episodes"]),
                           *((k, table[k]) for k in options if k in table)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
        try:
            spec = EpisodeSpec(**values) if kind == "fixed" else VariableEpisodeSpec(**values)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        return cls(spec, table["episodes"], {key: table.get(key, default) for key, default in options.items()})

    def describe(self) -> dict:
        return {**self.spec.to_dict(), "episodes": self.episodes, **self.options}


@dataclass(frozen=True)
class FewShotEntry:
    """One method of a few-shot suite, with its training, validation and test settings."""

    label: str
    method: str
    params: dict
    train: EpisodeSetting | None
    val: EpisodeSetting | None
    tests: tuple[EpisodeSetting, ...]
    retrain: str | None = None  # stage 2: retrain on this split for the episode count chosen on val
    chosen_on: str | None = None  # where the params were chosen (free text for the result)

    def recorded_params(self) -> dict:
        """The params a result records: the factory's, the training and validation settings, and
        the retraining split (``retrain`` only when the entry has one)."""
        recorded = {**self.params, "train": self.train.describe() if self.train else None,
                    "val": self.val.describe() if self.val else None}
        return recorded | ({"retrain": self.retrain} if self.retrain else {})


@dataclass(frozen=True)
class Output:
    """One result file a unit writes: its test setting, file name and configuration hash."""

    test: EpisodeSetting
    file_name: str
    config_hash: str


class FewShotProtocol:
    """Few-shot suites: parse, check without data, and run units into result files."""

    kind = "fewshot"

    # --- suite settings -------------------------------------------------------------------
    def parse_tests(self, tables: Any, where: str) -> tuple[EpisodeSetting, ...]:
        if not isinstance(tables, list):
            raise ValueError(f"{where}: expected an array of test settings")
        return tuple(EpisodeSetting.from_table(t, f"{where}[{i}]") for i, t in enumerate(tables))

    def parse_entry(self, table: Any, default_tests: tuple[EpisodeSetting, ...], where: str) -> FewShotEntry:
        check_keys(table, ENTRY_KEYS, where)
        if not isinstance(table.get("method"), str):
            raise ValueError(f"{where}: missing method (a registered method name)")
        tests = self.parse_tests(table.get("tests", []), f"{where}.tests") or default_tests
        if not tests:
            raise ValueError(f"{where}: no tests, and the suite has no default tests")
        params = table.get("params", {})
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params: expected a table of the method's parameters")
        label = table.get("label", table["method"])
        if not isinstance(label, str) or not label:
            raise ValueError(f"{where}.label: expected a non-empty string")
        retrain = table.get("retrain")
        if retrain is not None and (not isinstance(retrain, str) or "train" not in table or "val" not in table):
            raise ValueError(f"{where}.retrain: a split name (such as \"trainval\"), with train and val settings: "
                             "stage 1 trains on train and chooses the episode count on val, stage 2 retrains "
                             "on this split for that count")
        chosen_on = table.get("chosen_on")
        if chosen_on is not None and (not isinstance(chosen_on, str) or not 0 < len(chosen_on) <= MAX_CHOSEN_ON):
            raise ValueError(f"{where}.chosen_on: expected a short text (at most {MAX_CHOSEN_ON} characters) saying "
                             "where the params were chosen")
        return FewShotEntry(
            label=label, method=table["method"], params=dict(params),
            train=EpisodeSetting.from_table(table["train"], f"{where}.train", TRAIN_OPTIONS) if "train" in table
            else None,
            val=EpisodeSetting.from_table(table["val"], f"{where}.val", VAL_OPTIONS) if "val" in table else None,
            tests=tests, retrain=retrain, chosen_on=chosen_on)

    def untrained_entry(self, name: str, suite) -> FewShotEntry:
        """A registered method the suite does not list, run untrained on the suite's tests."""
        return FewShotEntry(name, name, {}, None, None, suite.default_tests or suite.methods[0].tests)

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
            for entry in suite.methods:
                problems += self._entry_problems(entry, benchmark)
        return list(dict.fromkeys(problems))

    def _entry_problems(self, entry: FewShotEntry, benchmark: Benchmark) -> list[str]:
        where = f"method {entry.label!r} on benchmark {benchmark.name!r}"
        try:
            method = get_method(entry.method)
        except ValueError as error:
            return [f"{where}: {error}"]
        problems = []
        if method.kind != self.kind:
            problems.append(f"{where}: {entry.method!r} is a {method.kind} method")
        try:
            inspect.signature(method.factory).bind(benchmark.input_shape, "cpu", **entry.params)
        except TypeError as error:
            problems.append(f"{where}: params {entry.params} do not fit the method's factory ({error})")
        roles = [("train", entry.train, "train"), ("val", entry.val, "val")]
        if entry.retrain is not None:
            roles.append((f"retrain on {entry.retrain}", entry.train, entry.retrain))
        roles += [(f"test {t.spec.key}", t, "test") for t in entry.tests]
        for role, setting, split in roles:
            if setting is None:
                continue
            size = benchmark.splits.get(split)
            if size is None:
                problems.append(f"{where}: the benchmark has no {split} split for the {role} setting "
                                f"(it has {', '.join(benchmark.splits)}); remove the setting")
                continue
            spec = setting.spec
            n_way = spec.n_way if isinstance(spec, EpisodeSpec) else spec.min_way
            if n_way > size.n_classes:
                problems.append(f"{where}: {role} needs {n_way}-way episodes but the {split} split has "
                                f"{size.n_classes} classes")
            if spec.examples_per_class > size.min_class_size:
                problems.append(f"{where}: {role} needs {spec.examples_per_class} examples per class but the "
                                f"smallest {split} class has {size.min_class_size}")
        return problems

    @staticmethod
    def describe(entry: FewShotEntry) -> str:
        """One line for ``protobench ls``: the method, its training and its test settings."""
        tests = ", ".join(t.spec.key for t in entry.tests)
        train = f"train {entry.train.spec.key} x {entry.train.episodes}" if entry.train else "no training"
        if entry.retrain:
            train += f", then retrain on {entry.retrain} for the count chosen on val"
        return f"{entry.method}, {train}; test {tests}"

    @staticmethod
    def headline(result: dict) -> str:
        """One line for a result: its setting, mean accuracy and CI in percent, episodes."""
        metrics = result["metrics"]
        return (f"{result['benchmark']['protocol']}: {100 * metrics['mean_accuracy']['value']:.2f} +- "
                f"{100 * metrics['ci95']['value']:.2f} % ({result['episodes']['n']} episodes)")

    # --- units ----------------------------------------------------------------------------
    def _training_config(self, unit: Unit, threads: int) -> dict:
        entry = unit.entry
        return {"benchmark": unit.benchmark, "method": entry.method, "params": entry.recorded_params(),
                "seed": unit.seed, "threads": threads}

    def outputs(self, unit: Unit, threads: int) -> list[Output]:
        """The result files ``unit`` writes, one per test setting."""
        training = self._training_config(unit, threads)
        return [Output(test, f"{unit.benchmark}__{unit.entry.label}__{test.spec.key}__seed{unit.seed}.json",
                       config_hash({**training, "test": test.describe()}))
                for test in unit.entry.tests]

    def run_unit(self, unit: Unit, outputs: list[Output], data, run: RunContext) -> Iterator[tuple[Output, dict]]:
        """Train (or reuse) the unit's learner, then score each pending test setting; yields
        (output, result) on every process (rank 0 writes them)."""
        learner, training = self._trained_learner(unit, data, run)
        test_source = data.sources["test"]
        names = class_names_of(test_source)
        started = time.perf_counter()
        embeddings = None
        if isinstance(learner, EmbeddingLearner):
            with run.precision(), progress_bar(len(test_source), f"embed {unit.benchmark} test for {unit.name}",
                                               "img", enabled=run.progress and world()[0] == 0,
                                               leave=False) as bar:
                embeddings = embed_source(learner, test_source, progress=bar)
        embed_seconds = time.perf_counter() - started
        for output in outputs:
            started = time.perf_counter()
            sampler = EpisodeSampler(test_source, output.test.spec, seed=unit.keys["episodes"],
                                     n_episodes=output.test.episodes)
            mine = shard(len(sampler), align=EVAL_CHUNK)
            with run.precision():
                if embeddings is not None:
                    accuracies = evaluate_cached(learner, embeddings, sampler, chunk=EVAL_CHUNK, episodes=mine,
                                                 class_names=names)
                else:
                    with progress_bar(len(mine), f"score {unit.name} {output.test.spec.key}", "episode",
                                      enabled=run.progress and world()[0] == 0, leave=False) as bar:
                        accuracies = evaluate_per_episode(learner, test_source, sampler.episodes(mine.start, mine.stop),
                                                          progress=bar)
            accuracies = gather_concatenated(accuracies)
            yield output, fewshot_result(
                unit=unit, output=output, benchmark=data, learner=learner, sampler=sampler, accuracies=accuracies,
                training=training, eval_seconds=embed_seconds + time.perf_counter() - started, device=run.device)
        barrier()

    def _trained_learner(self, unit: Unit, data, run: RunContext) -> tuple[Any, dict]:
        """The unit's learner, built with its ``init`` key, trained (or loaded from its final
        checkpoint) when the entry has ``train`` settings; and its training record.

        Rank 0 reuses or trains (under the runner's unit lock) and every rank then loads the
        final checkpoint. One that does not load into the learner is set aside and the unit
        trained again (:meth:`_final_fits`); an unusable training checkpoint is the context's to
        set aside (:meth:`TrainingContext.load_checkpoint`), and the training starts over.
        """
        entry = unit.entry
        learner = self._build(unit, data, run)
        if entry.train is None:
            return learner, {"episodes": 0, "selected_episode": 0, "train_seconds": 0.0, "curve": []}
        if not isinstance(learner, TrainableLearner):
            raise ValueError(f"method {entry.method!r} cannot be trained (it has no fit/state_dict/"
                             f"load_state_dict); remove the train setting of {entry.label!r}")
        checkpoints = run.checkpoints(unit.name, config_hash(self._training_config(unit, run.threads)))
        if world()[0] == 0:
            fits = self._final_fits(learner, checkpoints, unit, run)
            if fits is False:
                learner = self._build(unit, data, run)  # a failed load may have changed some weights
            if not fits:
                self._train(learner, unit, data, run, checkpoints)
        barrier()
        state, record = checkpoints.load_final(run.device)
        learner.load_state_dict(state)
        return learner, record

    @staticmethod
    def _final_fits(learner, checkpoints: Checkpoints, unit: Unit, run: RunContext) -> bool | None:
        """Whether the unit's final checkpoint loads into ``learner``; None when there is none. One
        that does not (unreadable, truncated, another model's) is set aside with a one-line notice."""
        if not checkpoints.final.is_file():
            return None
        try:
            state, _ = checkpoints.load_final(run.device)
            learner.load_state_dict(state)
        except Exception as error:  # load_state_dict raises what the learner raises (RuntimeError for torch)
            reason = str(error).removeprefix(f"{checkpoints.final}: ") if isinstance(error, CheckpointError) \
                else f"does not fit the model ({one_line(error)})"
            moved = set_aside(checkpoints.final)
            run.notice(f"{checkpoints.final}: {reason}; set aside as {moved.name}, training {unit.name} again")
            return False
        return True

    def _train(self, learner, unit: Unit, data, run: RunContext, checkpoints: Checkpoints) -> None:
        """Train ``learner`` on the unit's training settings, resuming from (and writing) its
        training checkpoint, and save the final checkpoint with the training record.

        With ``retrain``, two stages (the protocol of Snell et al. 2017): stage 1 trains on the
        ``train`` split and chooses the episode count with the best validation accuracy; its record
        is kept beside the checkpoints, so an interrupted stage 2 does not repeat it. Stage 2 trains
        a fresh learner (the same ``init`` key) on the ``retrain`` split for that many episodes,
        without validation. The record says which stage and class set produced the weights.
        """
        entry = unit.entry
        stage1_file = checkpoints.final.with_name(checkpoints.final.name.replace(".final.pt", ".stage1.json"))
        if entry.retrain is not None and stage1_file.is_file():
            stage1 = json.loads(stage1_file.read_text(encoding="utf-8"))
        else:
            stage1 = self._fit(learner, unit, data, run, "train", entry.train.episodes, self._validator(
                data, entry.val, unit.keys["val"]), checkpoints.partial, "train")
            if entry.retrain is None:
                record = stage1 | {"stage": "train", "train_split": "train"}
                checkpoints.save_final(learner.state_dict(), record)
                return
            write_json_atomic(stage1_file, stage1)
        chosen = int(stage1["selected_episode"])
        learner = self._build(unit, data, run)
        stage2_partial = checkpoints.partial.with_name(checkpoints.partial.name.replace(".partial.pt",
                                                                                        ".stage2.partial.pt"))
        record = self._fit(learner, unit, data, run, entry.retrain, chosen, None, stage2_partial,
                           f"retrain on {entry.retrain}")
        record |= {"stage": "retrain", "train_split": entry.retrain, "chosen_on": "val", "chosen_episodes": chosen,
                   "stage1": stage1}
        checkpoints.save_final(learner.state_dict(), record)
        stage1_file.unlink(missing_ok=True)

    def _fit(self, learner, unit: Unit, data, run: RunContext, split: str, n_episodes: int, validate,
             partial: Path, what: str) -> dict:
        """One training run of ``learner`` on ``split`` for ``n_episodes`` episodes; its record."""
        entry = unit.entry
        context = TrainingContext(
            n_episodes=n_episodes, seed=unit.keys["train"], device=run.device, validate=validate,
            validate_every=entry.val.options["every"] if validate is not None else n_episodes,
            checkpoint_path=partial, checkpoint_every=entry.train.options["checkpoint_every"],
            progress=run.progress, description=f"{what} {unit.name}",
            signature=state_signature(learner.state_dict()), notice=run.notice)
        started = time.perf_counter()
        with run.precision():
            record = learner.fit(data.sources[split], entry.train.spec, context).to_dict()
        context.discard_checkpoint()
        return record | {"wall_seconds_with_validation": round(time.perf_counter() - started, 1),
                         "threads": run.threads, "device": run.device}

    @staticmethod
    def _build(unit: Unit, data, run: RunContext) -> Any:
        """The unit's learner as its method's factory makes it, initialised with the ``init`` key; a
        learner with an in-memory :class:`FeatureCache` (``cache``) gets the run's stored one instead."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(unit.keys["init"])
            learner = build_method(unit.entry.method, data.input_shape, run.device, **unit.entry.params)
        if isinstance(getattr(learner, "cache", None), FeatureCache) and learner.cache.directory is None:
            learner.cache = run.feature_cache  # frozen image features: stored in the output folder
        return learner

    @staticmethod
    def _validator(data, setting: EpisodeSetting | None, key: int):
        if setting is None:
            return None
        sampler = EpisodeSampler(data.sources["val"], setting.spec, seed=key, n_episodes=setting.episodes)
        return lambda learner: float(evaluate(learner, data.sources["val"], sampler).mean())


def fewshot_result(*, unit: Unit, output: Output, benchmark, learner, sampler: EpisodeSampler,
                   accuracies: np.ndarray, training: dict, eval_seconds: float, device: str) -> dict:
    """A schema-conformant few-shot result for one test setting of a run unit."""
    mean, ci95 = mean_ci95(accuracies)
    spec, entry = sampler.spec, unit.entry
    return {
        **run_header("fewshot", unit.name, output.config_hash),
        "method": method_record(entry.method, entry.label, entry.recorded_params(), learner),
        "benchmark": {"name": benchmark.name, "dataset": benchmark.dataset, "dataset_checksum": benchmark.checksum,
                      "split": "test", "protocol": spec.key, "episode_spec": spec.to_dict()},
        "seeds": unit.keys,
        "episodes": {"n": len(sampler), "digest": sampler.digest(), "n_classes": int(len(sampler.classes))},
        "evidence": {"per_episode_accuracy": [float(a) for a in accuracies]},
        "metrics": {
            "mean_accuracy": {"value": mean, "definition": MEAN_DEFINITION},
            "ci95": {"value": ci95, "definition": CI95_DEFINITION},
        },
        "budget": {
            "train_episodes": training["episodes"],
            "train_wall_seconds": training["train_seconds"],
            "eval_wall_seconds": round(eval_seconds, 2),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
            "processes": world()[1],
        },
        "training": training_section(training, entry.chosen_on),
        "environment": environment(device),
    }


def training_section(training: dict, chosen_on: str | None) -> dict:
    """The result's ``training``: the training record less what ``budget`` holds, with the entry's
    ``chosen_on`` when it has one (after a retrain, whose record says the episode count was chosen on
    val, both: ``"<entry's text>; episode count chosen on val"``)."""
    section = {k: v for k, v in training.items() if k not in ("episodes", "train_seconds")}
    if chosen_on is not None:
        section["chosen_on"] = chosen_on if "chosen_on" not in section \
            else f"{chosen_on}; episode count chosen on {section['chosen_on']}"
    return section
