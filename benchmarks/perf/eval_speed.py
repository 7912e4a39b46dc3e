"""Batched evaluation from cached embeddings against a per-episode loop.

Run ``python -m protobench.benchmarks.perf.eval_speed`` (``--quick`` for a smoke run). Both paths score the
same episodes of one EpisodeSampler from the same cached embeddings with
``prototype_logits``: ``evaluate_cached`` in chunks of episodes, the loop one episode at a time
(B=1). Speeds are episodes/second (sampling included in both), best of ``--repeats`` after a
warm-up, reported as a ratio to the loop; nothing is asserted. torch's intra-op threads matter a
lot on a busy machine: compare ``--threads 1`` with the default.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from protobench.fewshot import EpisodeSampler, EpisodeSpec
from protobench.fewshot.counter_rng import role_key
from protobench.fewshot.evaluation import evaluate_cached
from protobench.fewshot.protonet import PrototypicalNetwork, prototype_logits

TARGET_RATIO = 10.0  # x the loop
TARGET_RATE = 20_000  # episodes/s


@torch.no_grad()
def per_episode_loop(embeddings: torch.Tensor, sampler: EpisodeSampler) -> np.ndarray:
    """The baseline: one prototype_logits call with B=1 per episode."""
    accuracies = np.empty(len(sampler), dtype=np.float64)
    for number, episode in enumerate(sampler.episodes()):
        support = embeddings[torch.from_numpy(episode.support)][None]
        query = embeddings[torch.from_numpy(episode.query)][None]
        logits = prototype_logits(support, torch.from_numpy(episode.support_labels), episode.n_way, query)
        correct = logits[0].argmax(-1) == torch.from_numpy(episode.query_labels)
        accuracies[number] = correct.double().mean().item()
    return accuracies


def best_time(run, sampler: EpisodeSampler, warm_up: EpisodeSampler, repeats: int):
    """(best seconds, last result) of ``run(sampler)`` over ``repeats`` timed calls.

    The warm-up call runs on ``warm_up``, a short sampler, to keep the whole benchmark short.
    """
    run(warm_up)
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run(sampler)
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--dim", type=int, default=1600)
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--way", type=int, default=5)
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.classes, args.per_class, args.dim, args.episodes = 10, 40, 64, 300
        args.chunks, args.repeats = [64], 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    embeddings = torch.randn(args.classes * args.per_class, args.dim, generator=generator)
    labels = np.repeat(np.arange(args.classes, dtype=np.int64), args.per_class)
    spec = EpisodeSpec(args.way, args.shot, args.query)
    sampler = EpisodeSampler(labels, spec, seed=args.seed, n_episodes=args.episodes)
    warm_up = EpisodeSampler(labels, spec, seed=role_key("warm-up", args.seed), n_episodes=min(args.episodes, 500))
    learner = PrototypicalNetwork()

    loop_time, loop_acc = best_time(lambda s: per_episode_loop(embeddings, s), sampler, warm_up, args.repeats)
    results = {}
    for chunk in args.chunks:
        results[chunk] = best_time(lambda s, c=chunk: evaluate_cached(learner, embeddings, s, chunk=c),
                                   sampler, warm_up, args.repeats)
    n = args.episodes
    loop_rate = n / loop_time
    best_chunk = min(results, key=lambda c: results[c][0])

    print(f"embeddings {args.classes} classes x {args.per_class}, {args.dim}-d float32; "
          f"{n:,} episodes {spec.n_way}-way {spec.n_shot}-shot {spec.n_query}-query; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"{'method':<34}{'eps/s':>12}{'x loop':>9}  {'accuracies equal':<18}target")
    print(f"{'per-episode loop, B=1 (baseline)':<34}{loop_rate:>12,.0f}{1.0:>9.2f}")
    for chunk, (seconds, acc) in results.items():
        rate = n / seconds
        equal = np.array_equal(acc, loop_acc)
        same = "yes" if equal else f"no ({int((acc != loop_acc).sum())} differ)"
        target = ""
        if chunk == best_chunk:
            met = rate / loop_rate >= TARGET_RATIO and rate >= TARGET_RATE
            target = f">= {TARGET_RATIO:g}x and >= {TARGET_RATE:,} eps/s ({'met' if met else 'NOT met'})"
        label = f"evaluate_cached chunk {chunk}" + (" (best)" if chunk == best_chunk else "")
        print(f"{label:<34}{rate:>12,.0f}{rate / loop_rate:>9.2f}  {same:<18}{target}")
    print(f"mean accuracy: loop {loop_acc.mean():.4f}, evaluate_cached {results[best_chunk][1].mean():.4f}")


if __name__ == "__main__":
    main()
