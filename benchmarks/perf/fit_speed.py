"""``PrototypicalNetwork.fit`` against a bare PyTorch training loop over the same tensors.

Run ``python -m protobench.benchmarks.perf.fit_speed`` (``--quick`` for a smoke run). Both train
a Conv-4 from the same initial weights on the same episodes (one ``EpisodeSampler``) of the
embedded Omniglot subset held in memory, with Adam and the same learning-rate schedule: ``fit``
through a :class:`~protobench.fewshot.training.TrainingContext` (no validation, no checkpoint
path), the bare loop written out in a few lines (indexing the image tensor, forward, prototype
logits, cross-entropy, backward, step). Timings alternate between the two, best of
``--repeats``; the ratio is bare seconds / fit seconds (1.0 = as fast; the target is >= 0.95).
The bare loop uses the memory format given by ``--bare-format`` (``fit`` always runs
channels-last on the CPU). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from protobench.fewshot import EpisodeSampler, EpisodeSpec
from protobench.fewshot.backbones import Conv4
from protobench.fewshot.datasets import load_omniglot_subset
from protobench.fewshot.protonet import PrototypicalNetwork, prototype_logits
from protobench.fewshot.training import TrainingContext

TARGET_RATIO = 0.95


def bare_loop(images: torch.Tensor, sampler: EpisodeSampler, backbone: torch.nn.Module, lr: float,
              lr_step: int, channels_last: bool) -> float:
    """The baseline: train ``backbone`` on the sampler's episodes; returns the last loss."""
    optimizer = torch.optim.Adam(backbone.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=0.5)
    backbone.train()
    loss = torch.zeros(())
    for episode in sampler.episodes():
        batch = images[torch.from_numpy(np.concatenate([episode.support, episode.query]))]
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = backbone(batch)
        n_support = len(episode.support)
        logits = prototype_logits(features[None, :n_support], torch.from_numpy(episode.support_labels),
                                  episode.n_way, features[None, n_support:])[0]
        loss = F.cross_entropy(logits, torch.from_numpy(episode.query_labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return float(loss.detach())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--way", type=int, default=60)
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--query", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bare-format", choices=("contiguous", "channels-last"), default="contiguous")
    parser.add_argument("--quick", action="store_true", help="a few episodes, one repeat (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.repeats, args.way = 10, 1, 20
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    train = load_omniglot_subset("train")
    spec = EpisodeSpec(args.way, args.shot, args.query)
    sampler = EpisodeSampler(train, spec, seed=0, n_episodes=args.episodes)
    torch.manual_seed(0)
    initial = Conv4(1).state_dict()
    lr, lr_step = 1e-3, 2000

    def run_fit() -> float:
        learner = PrototypicalNetwork(lr=lr, lr_step=lr_step)
        learner.load_state_dict(initial)
        start = time.perf_counter()
        learner.fit(train, spec, TrainingContext(n_episodes=args.episodes, seed=0, progress=False))
        return time.perf_counter() - start

    def run_bare() -> float:
        backbone = Conv4(1)
        backbone.load_state_dict(initial)
        channels_last = args.bare_format == "channels-last"
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        start = time.perf_counter()
        bare_loop(train.images, sampler, backbone, lr, lr_step, channels_last)
        return time.perf_counter() - start

    run_fit(), run_bare()  # warm-up
    fit_times, bare_times = [], []
    for _ in range(args.repeats):
        fit_times.append(run_fit())
        bare_times.append(run_bare())
    fit, bare = min(fit_times), min(bare_times)
    ratio = bare / fit
    print(f"{args.episodes} episodes {spec.key} on the embedded Omniglot subset; torch threads "
          f"{torch.get_num_threads()}; best of {args.repeats}, alternating")
    print(f"{'loop':40s} {'seconds':>8s} {'episodes/s':>11s} {'ratio':>6s}")
    print(f"{'bare PyTorch loop (' + args.bare_format + ', baseline)':40s} {bare:8.2f} {args.episodes / bare:11.1f}"
          f" {1.0:6.2f}")
    met = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"{'PrototypicalNetwork.fit':40s} {fit:8.2f} {args.episodes / fit:11.1f} {ratio:6.2f}  "
          f"target >= {TARGET_RATIO} ({met})")


if __name__ == "__main__":
    main()
