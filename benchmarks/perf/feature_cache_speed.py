"""The CLIP few-shot protocol's shots x seeds grid with and without the feature cache.

Run ``python -m protobench.benchmarks.perf.feature_cache_speed`` (``--quick`` for a smoke run,
``--encoder offline`` for the EfficientNet-Lite0 of the offline pair, extra ``pretrained``).

The grid is the CLIP protocol's: for each shot count K (1, 2, 4, 8, 16) and seed (0, 1, 2), one
episode of every class of a synthetic source, K shots per class and every other image a query,
scored by ProtoNet on the frozen image features
(:class:`~protobench.fewshot.vl_learners.ProtoNetFrozenLearner`). Three ways through it:

- ``no cache``: every grid point encodes the source again (a fresh, empty
  :class:`~protobench.fewshot.encoders.FeatureCache`), as a script without a cache does;
- ``cache, cold``: one cache with a directory for the whole grid: the first point encodes each
  image once and stores the shards, the others read memory;
- ``cache, from disk``: a new cache on the same directory, as a later run: nothing is encoded.

It prints each path's seconds, images encoded, and speed-up over ``no cache``, and checks that the
three give the same accuracies. Timings are wall seconds of one pass; nothing is asserted about them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from protobench.fewshot.backbones import Conv4
from protobench.fewshot.datasets import TensorSource
from protobench.fewshot.encoders import FeatureCache
from protobench.fewshot.episodes import EpisodeSpec
from protobench.fewshot.evaluation import embed_source, evaluate_cached
from protobench.fewshot.sampler import EpisodeSampler
from protobench.fewshot.vl_learners import ProtoNetFrozenLearner

SHOTS = (1, 2, 4, 8, 16)
SEEDS = (0, 1, 2)


class Conv4ImageEncoder:
    """A randomly initialised Conv-4 (seeded) as a frozen image encoder: uint8 images (n, 3, H, W) to
    L2-normalised features. ``module`` is what the cache's fingerprint hashes."""

    name = "conv4-random"
    preprocessing = "uint8 / 255"

    def __init__(self, seed: int = 0) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = Conv4(in_channels=3).eval()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.module(images.float() / 255), dim=-1)


def synthetic_source(n_classes: int, per_class: int, size: int, seed: int) -> TensorSource:
    """``per_class`` uint8 RGB images of ``size`` pixels per class, each class a noisy colour."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randint(0, 256, (n_classes, 3, 1, 1), generator=generator).float()
    noise = torch.randn(n_classes, per_class, 3, size, size, generator=generator) * 60
    images = (centres[:, None] + noise).clamp(0, 255).to(torch.uint8).flatten(0, 1)
    return TensorSource(images, np.repeat(np.arange(n_classes), per_class))


def run_grid(make_cache: Callable[[], FeatureCache], shared: bool, encoder, source: TensorSource,
             shots: tuple[int, ...], seeds: tuple[int, ...]) -> tuple[float, int, list[float]]:
    """(seconds, images encoded, accuracy per grid point) of the grid; ``shared``: one cache for all
    points, else a new one per point."""
    labels = source.labels
    n_classes, smallest = int(labels.max()) + 1, int(np.bincount(labels).min())
    cache = make_cache()
    encoded, accuracies = 0, []
    start = time.perf_counter()
    for shot in shots:
        for seed in seeds:
            if not shared:
                encoded += cache.encoded
                cache = make_cache()
            learner = ProtoNetFrozenLearner(encoder, cache=cache)
            features = embed_source(learner, source)
            sampler = EpisodeSampler(labels, EpisodeSpec(n_classes, shot, smallest - shot), seed=seed, n_episodes=1)
            accuracies.append(float(evaluate_cached(learner, features, sampler)[0]))
    return time.perf_counter() - start, encoded + cache.encoded, accuracies


def build_encoder(name: str):
    if name == "conv4":
        return Conv4ImageEncoder()
    from protobench.fewshot.vl_learners import build_encoders  # the offline pair needs the extra

    return build_encoders("offline-efficientnet-minilm").pair.image


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=("conv4", "offline"), default="conv4")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=40, help="images per class (more than the largest shot)")
    parser.add_argument("--size", type=int, default=84, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)
    shots, seeds = SHOTS, SEEDS
    if args.quick:
        args.classes, args.per_class, args.size, shots, seeds = 3, 6, 28, (1, 2), (0, 1)
    if args.per_class <= max(shots):
        parser.error(f"--per-class must exceed the largest shot count, {max(shots)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    encoder = build_encoder(args.encoder)
    source = synthetic_source(args.classes, args.per_class, args.size, seed=0)
    print(f"{len(shots)} shot counts x {len(seeds)} seeds, {len(source)} images ({args.classes} classes, "
          f"{args.size} px), encoder {encoder.name}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as directory:
        runs = {"no cache": run_grid(FeatureCache, False, encoder, source, shots, seeds),
                "cache, cold": run_grid(lambda: FeatureCache(directory), True, encoder, source, shots, seeds),
                "cache, from disk": run_grid(lambda: FeatureCache(directory), True, encoder, source, shots, seeds)}
        stored = sum(1 for _ in Path(directory).rglob("*.safetensors"))
    baseline = runs["no cache"][0]
    print(f"{'path':<18} {'seconds':>9} {'encoded':>9} {'speed-up':>9}")
    for path, (seconds, encoded, _) in runs.items():
        print(f"{path:<18} {seconds:>9.3f} {encoded:>9d} {baseline / seconds:>9.2f}")
    identical = len({tuple(accuracies) for _, _, accuracies in runs.values()}) == 1
    print(f"{stored} shards on disk; the three paths give identical accuracies: {identical}")
    return {"runs": runs, "images": len(source), "grid": len(shots) * len(seeds), "identical": identical}


if __name__ == "__main__":
    main()
