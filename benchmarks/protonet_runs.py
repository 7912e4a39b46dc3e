"""Train-then-evaluate runs of Prototypical Networks, one result file per test setting.

A :class:`ProtoNetRun` trains one model (episodes of ``train_spec``), picks its weights on the
validation classes, and evaluates it on every setting in ``tests``. The trained weights are kept
under ``<out>/checkpoints/``; a run that finds them skips training, and a run interrupted during
training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from benchmarks.results import build_fewshot_result, result_filename, write_json_atomic
from fewshot.episodes import EpisodeSpec
from fewshot.evaluation import embed_source, evaluate_cached
from fewshot.metrics import mean_ci95
from fewshot.protonet import PrototypicalNetwork
from fewshot.sampler import EpisodeSampler


@dataclass(frozen=True)
class EvalSetting:
    """Evaluation on ``n_episodes`` test episodes of ``spec`` drawn with ``seed``."""

    spec: EpisodeSpec
    n_episodes: int = 1000
    seed: int = 2


@dataclass(frozen=True)
class ProtoNetRun:
    """Everything that defines one training run and its evaluations."""

    name: str
    benchmark: str
    dataset: str
    train_spec: EpisodeSpec
    train_episodes: int
    tests: tuple[EvalSetting, ...]
    val_spec: EpisodeSpec | None
    val_episodes: int = 300
    validate_every: int = 500
    lr: float = 1e-3
    lr_step: int = 2000
    lr_gamma: float = 0.5
    train_seed: int = 0
    val_seed: int = 1
    in_channels: int = 1
    notes: dict = field(default_factory=dict)

    def config(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


def _validator(val_source, spec: EpisodeSpec, n_episodes: int, seed: int) -> Callable:
    sampler = EpisodeSampler(val_source, spec, seed=seed, n_episodes=n_episodes)

    def validate(learner: PrototypicalNetwork) -> float:
        embeddings = embed_source(learner, val_source)
        return float(evaluate_cached(learner, embeddings, sampler).mean())

    return validate


def train_or_load(run: ProtoNetRun, sources: dict, out_dir: Path, device: str, progress: bool = True):
    """The trained learner and its training record, training only when no final weights exist."""
    checkpoints = out_dir / "checkpoints"
    final = checkpoints / f"{run.name}.final.pt"
    learner = PrototypicalNetwork(in_channels=run.in_channels, device=device)
    if final.is_file():
        saved = torch.load(final, weights_only=False)
        learner.backbone.load_state_dict(saved["model"])
        return learner, saved["training"]
    validate = None
    if run.val_spec is not None and sources.get("val") is not None:
        validate = _validator(sources["val"], run.val_spec, run.val_episodes, run.val_seed)
    started = time.perf_counter()
    learner.fit(
        sources["train"], run.train_spec, n_episodes=run.train_episodes, seed=run.train_seed,
        lr=run.lr, lr_step=run.lr_step, lr_gamma=run.lr_gamma, validate=validate,
        validate_every=run.validate_every, checkpoint=checkpoints / f"{run.name}.partial.pt",
        progress=progress,
    )
    training = {
        "episodes": run.train_episodes,
        "selected_episode": learner.selected_episode,
        "wall_seconds": round(learner.train_seconds, 1),
        "wall_seconds_with_validation": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "device": str(learner.device),
        "curve": learner.history,
    }
    torch.save({"model": learner.backbone.state_dict(), "training": training, "config": run.config()}, final)
    return learner, training


def evaluate_run(run: ProtoNetRun, learner, training: dict, test_source, out_dir: Path,
                 dataset_checksum: str | None, progress: bool = True) -> list[dict]:
    """Evaluate on every test setting; write and return one result dict per setting."""
    started = time.perf_counter()
    with tqdm(total=len(test_source), desc="embed test", unit="img", disable=not progress) as bar:
        embeddings = embed_source(learner, test_source, progress=bar)
    embed_seconds = time.perf_counter() - started
    results = []
    for setting in run.tests:
        started = time.perf_counter()
        sampler = EpisodeSampler(test_source, setting.spec, seed=setting.seed, n_episodes=setting.n_episodes)
        accuracies = evaluate_cached(learner, embeddings, sampler)
        result = build_fewshot_result(
            run=run, sampler=sampler, accuracies=accuracies, training=training,
            dataset_checksum=dataset_checksum,
            eval_seconds=embed_seconds + time.perf_counter() - started, device=str(learner.device),
        )
        write_json_atomic(out_dir / result_filename(result), result)
        results.append(result)
        mean, ci = mean_ci95(accuracies)
        if progress:
            spec = setting.spec
            print(f"{run.benchmark} {spec.n_way}-way {spec.n_shot}-shot: {100 * mean:.2f} +- {100 * ci:.2f} "
                  f"({setting.n_episodes} episodes)")
    return results
