"""The evaluation runner: every run unit of a suite, trained (or reused), evaluated, written.

For each unit (benchmark, method entry, seed) the runner

1. skips it when every result file it would write already exists and validates (resume);
2. builds the method, trains it when the entry has ``train`` settings, keeping the weights under
   ``<out>/checkpoints/<unit>.final.pt`` (a later run reuses them; an interrupted training
   resumes from ``<unit>.partial.pt``);
3. embeds each test image once and scores all test episodes from the cached embeddings (or
   calls ``predict`` per episode for methods without ``embed``);
4. writes one result file per test setting, atomically.

Under ``torchrun`` rank 0 trains while the others wait, every process scores its contiguous
share of the episodes, and rank 0 writes files identical to a single-process run's.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.datasets import BenchmarkData
from benchmarks.distributed import barrier, gather_concatenated, shard, world
from benchmarks.registry import get_benchmark, get_method
from benchmarks.results import build_fewshot_result, write_json_atomic
from benchmarks.suite import EpisodeSetting, Suite, Unit
from fewshot.evaluation import embed_source, evaluate_cached, evaluate_per_episode
from fewshot.sampler import EpisodeSampler
from leaderboard.validate import validate_file

EVAL_CHUNK = 64  # episodes scored per batched call; shards are aligned to it


def precision(device: str):
    """Mixed precision (bfloat16 autocast) on CUDA; full precision elsewhere."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _say(message: str, progress: bool) -> None:
    if progress and world()[0] == 0:
        tqdm.write(message)


def existing_result(path: Path) -> dict | None:
    """The result at ``path`` when it exists and validates, else None."""
    if path.is_file() and not validate_file(path):
        return json.loads(path.read_text())
    return None


def run_suite(suite: Suite, *, out_dir: Path, data_root: Path | None, device: str,
              progress: bool = True) -> list[dict]:
    """Run every unit of ``suite``; return all its results (new and reused)."""
    results = []
    for benchmark_name in suite.benchmarks:
        data = None
        for unit in (u for u in suite.units() if u.benchmark == benchmark_name):
            done = [(test, existing_result(out_dir / unit.result_name(test))) for test in unit.entry.tests]
            results += [result for _, result in done if result is not None]
            pending = [test for test, result in done if result is None]
            if not pending:
                _say(f"{unit.name}: all {len(done)} result files exist and validate; skipped", progress)
                continue
            data = data or get_benchmark(benchmark_name)(data_root)
            learner, training = train_or_load(unit, data, out_dir, device, progress)
            results += evaluate_unit(unit, learner, training, data, pending, out_dir, device, progress)
    return results


def _validator(val_source, setting: EpisodeSetting, seed: int) -> Callable:
    sampler = EpisodeSampler(val_source, setting.spec, seed=seed, n_episodes=setting.episodes)

    def validate(learner) -> float:
        return float(evaluate_cached(learner, embed_source(learner, val_source), sampler).mean())

    return validate


def train_or_load(unit: Unit, data: BenchmarkData, out_dir: Path, device: str, progress: bool = True):
    """The unit's learner, trained (or loaded from its final checkpoint), and its training record.

    The method is built with torch's RNG seeded from the unit's training seed (inside
    ``fork_rng``, so the caller's global RNG state is left as it was): the same unit starts from
    the same initial weights in every run and every process.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(unit.seeds["train"])
        learner = get_method(unit.entry.method)(data.input_shape, device, **unit.entry.params)
    train = unit.entry.train
    if train is None or not hasattr(learner, "fit"):
        return learner, {"episodes": 0, "wall_seconds": 0.0}
    final = out_dir / "checkpoints" / f"{unit.name}.final.pt"
    if world()[0] == 0 and not final.is_file():
        _train(unit, learner, data, final, progress)
    barrier()
    saved = torch.load(final, map_location=device, weights_only=True)
    learner.load_state_dict(saved["model"])
    return learner, saved["training"]


def _train(unit: Unit, learner, data: BenchmarkData, final: Path, progress: bool) -> None:
    train, val = unit.entry.train, unit.entry.val
    validate = None
    if val is not None and data.sources.get("val") is not None:
        validate = _validator(data.sources["val"], val, unit.seeds["val"])
    options = dict(train.options)
    started = time.perf_counter()
    with precision(str(learner.device) if hasattr(learner, "device") else "cpu"):
        learner.fit(data.sources["train"], train.spec, n_episodes=train.episodes, seed=unit.seeds["train"],
                    validate=validate, validate_every=val.options.get("every", 500) if val else train.episodes,
                    checkpoint=final.with_name(f"{unit.name}.partial.pt"), progress=progress, **options)
    training = {
        "episodes": train.episodes,
        "selected_episode": getattr(learner, "selected_episode", train.episodes),
        "wall_seconds": round(getattr(learner, "train_seconds", time.perf_counter() - started), 1),
        "wall_seconds_with_validation": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "device": str(getattr(learner, "device", "cpu")),
        "curve": getattr(learner, "history", []),
    }
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".writing")
    torch.save({"model": learner.state_dict(), "training": training}, partial)
    partial.replace(final)
    final.with_name(f"{unit.name}.partial.pt").unlink(missing_ok=True)


def evaluate_unit(unit: Unit, learner, training: dict, data: BenchmarkData, tests: list[EpisodeSetting],
                  out_dir: Path, device: str, progress: bool = True) -> list[dict]:
    """Score every test setting of ``unit``; rank 0 writes one result file per setting."""
    test_source = data.sources["test"]
    cached = hasattr(learner, "embed") and hasattr(learner, "logits_from_embeddings")
    started = time.perf_counter()
    embeddings = None
    if cached:
        with precision(device), tqdm(total=len(test_source), desc=f"embed {unit.benchmark} test", unit="img",
                                     disable=not progress or world()[0] != 0, leave=False) as bar:
            embeddings = embed_source(learner, test_source, progress=bar)
    embed_seconds = time.perf_counter() - started
    results = []
    for test in tests:
        started = time.perf_counter()
        sampler = EpisodeSampler(test_source, test.spec, seed=unit.seeds["episodes"], n_episodes=test.episodes)
        mine = shard(len(sampler), align=EVAL_CHUNK)
        if cached:
            accuracies = evaluate_cached(learner, embeddings, sampler, chunk=EVAL_CHUNK, episodes=mine)
        else:
            accuracies = evaluate_per_episode(learner, test_source, sampler.episodes(mine.start, mine.stop))
        accuracies = gather_concatenated(accuracies)
        result = build_fewshot_result(unit=unit, data=data, learner=learner, sampler=sampler, accuracies=accuracies,
                                      training=training, eval_seconds=embed_seconds + time.perf_counter() - started,
                                      device=device, world_size=world()[1])
        if world()[0] == 0:
            write_json_atomic(out_dir / unit.result_name(test), result)
        mean, ci95 = result["metrics"]["mean_accuracy"]["value"], result["metrics"]["ci95"]["value"]
        _say(f"{unit.name} {result['benchmark']['protocol']}: {100 * mean:.2f} +- {100 * ci95:.2f} "
             f"({test.episodes} episodes)", progress)
        results.append(result)
    barrier()
    return results
