"""Episode sampling speed: EpisodeSampler against a plain per-episode Python sampler.

Run ``python -m protobench.benchmarks.perf.sampler_speed`` (``--quick`` for a smoke run). Speeds are
episodes/second, each the best of ``--repeats`` timed runs after a warm-up, and reported as a
ratio to the plain ``random.Random`` sampler timed in the same process; nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from protobench.fewshot import EpisodeSampler, EpisodeSpec

TARGET_ONE_AT_A_TIME = 10.0  # x the plain sampler
TARGET_BATCHED = 100_000  # episodes/s


def make_labels(n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    np.random.default_rng(seed).shuffle(labels)
    return labels


class PlainSampler:
    """The baseline: one episode at a time with ``random.Random`` and per-class index lists."""

    def __init__(self, labels: np.ndarray, spec: EpisodeSpec, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(labels.tolist()):
            by_class.setdefault(label, []).append(index)
        self.classes = sorted(by_class)
        self.by_class = [by_class[c] for c in self.classes]

    def episode(self) -> tuple[list[int], list[int], list[int]]:
        n_way, n_shot, n_query = self.spec.n_way, self.spec.n_shot, self.spec.n_query
        chosen = self.rng.sample(range(len(self.classes)), n_way)
        support: list[int] = []
        query: list[int] = []
        for pos in chosen:
            picked = self.rng.sample(self.by_class[pos], n_shot + n_query)
            support.extend(picked[:n_shot])
            query.extend(picked[n_shot:])
        return [self.classes[p] for p in chosen], support, query


def best_rate(run, n: int, repeats: int) -> float:
    """Episodes/second of ``run(n)``: one warm-up call, then the best of ``repeats``."""
    run(max(1, n // 10))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(n)
        best = min(best, time.perf_counter() - start)
    return n / best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--way", type=int, default=5)
    parser.add_argument("--shot", type=int, default=5)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--one-at-a-time", type=int, default=20_000,
                        help="episodes per timed run for the plain sampler and episodes()")
    parser.add_argument("--random-access", type=int, default=2_000,
                        help="episodes per timed run for sampler[i] (the slowest path)")
    parser.add_argument("--batched", type=int, default=200_000, help="episodes per timed batched run")
    parser.add_argument("--chunks", type=int, nargs="+", default=[512, 1024, 4096, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.one_at_a_time, args.random_access, args.batched = 500, 200, 5_000
        args.chunks, args.repeats = [1024], 1

    labels = make_labels(args.classes, args.per_class, args.seed)
    spec = EpisodeSpec(args.way, args.shot, args.query)
    n_total = max(args.one_at_a_time, args.random_access, args.batched)
    sampler = EpisodeSampler(labels, spec, seed=args.seed, n_episodes=n_total)

    draw = PlainSampler(labels, spec, args.seed).episode

    def plain(n: int) -> None:
        for _ in range(n):
            draw()

    def random_access(n: int) -> None:
        for i in range(n):
            sampler[i]

    def iterate(n: int) -> None:
        for _ in sampler.episodes(0, n):
            pass

    def batched(chunk: int):
        def run(n: int) -> None:
            for start in range(0, n, chunk):
                sampler.batch(start, min(start + chunk, n))
        return run

    n1 = args.one_at_a_time
    rows = [("plain random.Random (baseline)", best_rate(plain, n1, args.repeats), "")]
    rows.append(("EpisodeSampler[i]", best_rate(random_access, args.random_access, args.repeats),
                 f">= {TARGET_ONE_AT_A_TIME:g}x plain"))
    rows.append(("sampler.episodes()", best_rate(iterate, n1, args.repeats),
                 f">= {TARGET_ONE_AT_A_TIME:g}x plain"))
    batch_rates = {c: best_rate(batched(c), args.batched, args.repeats) for c in args.chunks}
    for chunk, rate in batch_rates.items():
        rows.append((f"sampler.batch, chunk {chunk}", rate, ""))
    best_chunk = max(batch_rates, key=batch_rates.get)
    rows.append((f"batched best (chunk {best_chunk})", batch_rates[best_chunk], f">= {TARGET_BATCHED:,} eps/s"))

    base = rows[0][1]
    print(f"labels {args.classes} classes x {args.per_class}; {spec.n_way}-way {spec.n_shot}-shot "
          f"{spec.n_query}-query; episodes per run: {n1:,} (plain, episodes()), "
          f"{args.random_access:,} (sampler[i]), {args.batched:,} (batched); "
          f"best of {args.repeats}")
    print(f"{'method':<34}{'eps/s':>12}{'x plain':>10}  target")
    for name, rate, target in rows:
        status = ""
        if target:
            met = rate / base >= TARGET_ONE_AT_A_TIME if target.endswith("x plain") else rate >= TARGET_BATCHED
            status = f"{target} ({'met' if met else 'NOT met'})"
        print(f"{name:<34}{rate:>12,.0f}{rate / base:>10.2f}  {status}")


if __name__ == "__main__":
    main()
