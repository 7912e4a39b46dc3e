"""Continual training throughput: ``FineTune`` against a bare PyTorch loop and Avalanche's ``Naive``.

Run ``python -m protobench.benchmarks.perf.continual_speed`` (``--quick`` for a smoke run on the
embedded ``split-digits`` benchmark, no data needed). It trains on ONE experience (the first) of
Split-FashionMNIST (class-incremental, 2 classes, 12,000 training images, held as CPU tensors;
data root ``--data-root``, else ``$PROTOBENCH_DATA``, else ``/work/shared/data``) for ``--epochs``
epochs, with the same model (``--backbone``: :func:`~protobench.continual.backbones.build_backbone`
plus a linear head) from the same initial weights, plain SGD and cross-entropy, three ways:

1. the harness: ``FineTune.train_experience`` with a :class:`ContinualContext` (progress off);
2. the baseline: a bare PyTorch loop written out in a few lines, indexing the image tensor with
   the harness's batch order (:func:`permutation` of the context's ``order`` keys) and taking the
   same cross-entropy (FineTune's output mask: the columns of the classes not seen yet get
   minus infinity); it ends with the harness's weights, which is checked and printed;
3. Avalanche's ``Naive`` with its default evaluator (accuracy and loss metrics, interactive
   logger, which prints while it trains) and its own data loader, through
   :func:`~protobench.continual.avalanche_interop.avalanche_learner`.

Throughput is training images per second (epochs x examples / wall seconds of the training call;
building the learner is not timed). Each repeat runs the three loops in turn, starting with a
different one each time (the machine may be shared), after a warm-up on a few batches; a loop's
time is its best over ``--repeats``. The table gives each loop's ratio to the bare loop (bare
seconds / its seconds) and the harness's speed-up over Avalanche, against the targets: harness
>= 0.95x the bare loop and >= 1.3x Avalanche. ``--threads`` (default 1) sets torch's intra-op
threads for all three. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from protobench.benchmarks.registry import get_benchmark
from protobench.continual.avalanche_interop import avalanche_learner
from protobench.continual.backbones import build_backbone
from protobench.continual.experience import Experience, ExperienceData, permutation
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.finetune import FineTune
from protobench.continual.learners.training import Classifier
from protobench.fewshot.counter_rng import role_key

TARGET_VS_BARE = 0.95
TARGET_VS_AVALANCHE = 1.3
DEFAULT_DATA_ROOT = "/work/shared/data"
LR = 0.01
WARM_UP_BATCHES = 4


def bare_loop(model: Classifier, data: ExperienceData, context: ContinualContext, *, epochs: int, batch_size: int,
              output_mask: torch.Tensor) -> None:
    """The baseline: ``epochs`` passes of SGD (lr :data:`LR`) over ``data`` in the harness's batch order,
    cross-entropy of ``model(x) + output_mask``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    for epoch in range(epochs):
        rows = data.indices[torch.from_numpy(permutation(len(data), context.key("order", epoch), epoch))]
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            loss = F.cross_entropy(model(data.images[batch]) + output_mask, data.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def seeded(build: Callable[[], object], seed: int) -> object:
    """``build()`` with the global torch generator seeded with ``seed``, restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        return build()


def warm_up_experience(experience: Experience, batch_size: int) -> Experience:
    """``experience`` cut to its first :data:`WARM_UP_BATCHES` training batches."""
    train = dataclasses.replace(experience.train, indices=experience.train.indices[:WARM_UP_BATCHES * batch_size])
    return dataclasses.replace(experience, train=train)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, fair to all)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help=f"folder holding fashion-mnist/ (default $PROTOBENCH_DATA, else {DEFAULT_DATA_ROOT})")
    parser.add_argument("--quick", action="store_true",
                        help="the embedded split-digits benchmark, one epoch, one repeat (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = 1, 1
    torch.set_num_threads(args.threads)

    name = "split-digits" if args.quick else "split-fmnist"
    data_root = None if args.quick else (args.data_root or Path(os.environ.get("PROTOBENCH_DATA", DEFAULT_DATA_ROOT)))
    stream = get_benchmark(name).load(data_root).make_stream(role_key("stream", 0), "cpu", "test")
    experience = stream[0]
    context = ContinualContext("cpu", seed=role_key("train", 0), experience_index=0, progress=False)
    warm_up = warm_up_experience(experience, args.batch_size)
    init_seed = role_key("init", 0)
    settings = {"backbone": args.backbone, "epochs": args.epochs, "batch_size": args.batch_size, "lr": LR}

    def build_harness() -> FineTune:
        return seeded(lambda: FineTune(stream.input_shape, "cpu", stream.n_classes, **settings), init_seed)

    initial = build_harness().model.state_dict()
    output_mask = torch.full((stream.n_classes,), -math.inf)
    output_mask[:max(experience.classes) + 1] = 0.0  # FineTune's mask="seen" on the first experience
    trained: dict[str, dict[str, torch.Tensor]] = {}

    def run_harness(exp: Experience) -> float:
        learner = build_harness()
        learner.model.load_state_dict(initial)
        start = time.perf_counter()
        learner.train_experience(exp, context)
        seconds = time.perf_counter() - start
        trained["harness"] = learner.model.state_dict()
        return seconds

    def run_bare(exp: Experience) -> float:
        model = seeded(lambda: Classifier(build_backbone(args.backbone, stream.input_shape), stream.n_classes),
                       init_seed)
        model.load_state_dict(initial)
        start = time.perf_counter()
        bare_loop(model, exp.train, context, epochs=args.epochs, batch_size=args.batch_size, output_mask=output_mask)
        seconds = time.perf_counter() - start
        trained["bare"] = model.state_dict()
        return seconds

    def run_avalanche(exp: Experience) -> float:
        learner = seeded(lambda: avalanche_learner(stream.input_shape, "cpu", stream.n_classes, strategy="naive",
                                                   evaluator="default", loader="avalanche", **settings), init_seed)
        learner.strategy.model.load_state_dict(initial)
        start = time.perf_counter()
        learner.train_experience(exp, context)
        return time.perf_counter() - start

    loops = {"bare": run_bare, "harness": run_harness, "avalanche": run_avalanche}
    for run in loops.values():
        run(warm_up)
    times: dict[str, list[float]] = {loop: [] for loop in loops}
    for repeat in range(args.repeats):
        order = list(loops)[repeat % len(loops):] + list(loops)[:repeat % len(loops)]
        for loop in order:
            times[loop].append(loops[loop](experience))
    best = {loop: min(seconds) for loop, seconds in times.items()}
    same = max((trained["harness"][k] - trained["bare"][k]).abs().max().item() for k in trained["bare"])

    images = args.epochs * len(experience.train)
    print()
    print(f"{name} experience 0 ({len(experience.train)} training images, classes {list(experience.classes)}), "
          f"{args.backbone}, {args.epochs} epoch(s), batch {args.batch_size}, SGD lr {LR}; torch threads "
          f"{torch.get_num_threads()}; best of {args.repeats}, alternating")
    print(f"{'loop':52s} {'seconds':>8s} {'images/s':>9s} {'ratio':>6s}")
    rows = (("bare", "bare PyTorch loop (baseline)"), ("harness", "harness: FineTune.train_experience"),
            ("avalanche", "Avalanche Naive (default evaluator, own loader)"))
    for loop, label in rows:
        ratio = best["bare"] / best[loop]
        target = ""
        if loop == "harness":
            target = f"  target >= {TARGET_VS_BARE} ({'met' if ratio >= TARGET_VS_BARE else 'NOT met'})"
        print(f"{label:52s} {best[loop]:8.3f} {images / best[loop]:9.0f} {ratio:6.3f}{target}")
    speed_up = best["avalanche"] / best["harness"]
    met = "met" if speed_up >= TARGET_VS_AVALANCHE else "NOT met"
    print(f"harness / Avalanche: {speed_up:.3f}x  target >= {TARGET_VS_AVALANCHE} ({met})")
    print(f"harness and bare loop weights after training: max |difference| {same:.3g}")
    print("all times (s): " + "; ".join(f"{loop} " + " ".join(f"{s:.3f}" for s in seconds)
                                        for loop, seconds in times.items()))


if __name__ == "__main__":
    main()
