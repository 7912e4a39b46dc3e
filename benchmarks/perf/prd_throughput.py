"""PRD's training throughput beside fine-tuning's, on the same backbone and experience.

Run ``python -m protobench.benchmarks.perf.prd_throughput`` (``--quick``: the embedded ``split-digits``
benchmark, no data needed; ``--backbone resnet18-reduced --benchmark split-cifar10`` for the CIFAR
setting). It builds both learners from the same seed, trains each on the stream's FIRST experience
(PRD without distillation there: no old model yet), then on the SECOND (PRD now runs the frozen
teacher and the relation distillation), ``--epochs`` each, batch ``--batch-size``; data root
``--data-root``, else ``$PROTOBENCH_DATA``, else ``/work/shared/data``.

Throughput is training images per second: epochs x examples / wall seconds of the
``train_experience`` call (building the learner is not timed). PRD sees each image as two augmented
views, both encoded, and from the second experience on a teacher pass as well; the images/s counted
are the stream's images, as for fine-tuning. Each repeat trains both learners in turn, starting with
a different one each time (the machine may be shared); a time is the best over ``--repeats``. The
ratio is PRD's images/s over fine-tuning's (the baseline, run in the same process). PRD's settings
are the ``continual-fmnist`` suite's chosen ones except what the flags set. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from protobench.benchmarks.perf.continual_speed import DEFAULT_DATA_ROOT, seeded
from protobench.benchmarks.registry import get_benchmark
from protobench.continual.backbones import BACKBONES
from protobench.continual.learner import ContinualContext
from protobench.continual.learners.finetune import FineTune
from protobench.continual.learners.prd import PRD
from protobench.fewshot.counter_rng import role_key

PRD_SETTINGS = {"lr": 0.01, "prototype_lr": 0.1, "distill_axis": "samples", "distill_temperature": 0.1,
                "distill_coef": 1.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split-fmnist")
    parser.add_argument("--backbone", choices=BACKBONES, default="mlp")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help=f"dataset folder (default $PROTOBENCH_DATA, else {DEFAULT_DATA_ROOT})")
    parser.add_argument("--quick", action="store_true", help="embedded split-digits, one repeat (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.benchmark, args.repeats = "split-digits", 1
    torch.set_num_threads(args.threads)
    data_root = None if args.quick else (args.data_root or Path(os.environ.get("PROTOBENCH_DATA", DEFAULT_DATA_ROOT)))
    try:
        benchmark = get_benchmark(args.benchmark)
    except ValueError as error:
        parser.error(str(error))
    if benchmark.kind != "continual":
        parser.error(f"--benchmark {args.benchmark!r} is a {benchmark.kind} benchmark; give a continual one")
    stream = benchmark.load(data_root).make_stream(role_key("stream", 0), "cpu", "test")
    common = {"backbone": args.backbone, "epochs": args.epochs, "batch_size": args.batch_size}
    builders = {
        "finetune": lambda: FineTune(stream.input_shape, "cpu", stream.n_classes, **common, lr=0.01),
        "prd": lambda: PRD(stream.input_shape, "cpu", stream.n_classes, **common, **PRD_SETTINGS),
    }
    contexts = [ContinualContext("cpu", seed=role_key("train", 0), experience_index=index, progress=False)
                for index in (0, 1)]

    def run(name: str) -> list[float]:
        """Seconds of the two ``train_experience`` calls of a freshly built learner."""
        learner = seeded(builders[name], role_key("init", 0))
        seconds = []
        for index in (0, 1):
            start = time.perf_counter()
            learner.train_experience(stream[index], contexts[index])
            seconds.append(time.perf_counter() - start)
        return seconds

    times: dict[str, list[list[float]]] = {name: [] for name in builders}
    for repeat in range(args.repeats):
        order = list(builders)[repeat % 2:] + list(builders)[:repeat % 2]
        for name in order:
            times[name].append(run(name))
    best = {name: [min(run_times[i] for run_times in runs) for i in (0, 1)] for name, runs in times.items()}
    images = [args.epochs * len(stream[index].train) for index in (0, 1)]
    print()
    print(f"{args.benchmark}, {args.backbone}, {args.epochs} epoch(s) per experience, batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}, alternating")
    print(f"{'learner':10s} {'experience':18s} {'seconds':>8s} {'images/s':>9s} {'ratio to finetune':>17s}")
    for index, label in ((0, "1 (no old model)"), (1, "2 (distillation)")):
        for name in builders:
            ratio = best["finetune"][index] / best[name][index]
            print(f"{name:10s} {label:18s} {best[name][index]:8.3f} {images[index] / best[name][index]:9.0f} "
                  f"{ratio:17.3f}")
    print("all times (s): " + "; ".join(f"{name} " + " ".join(f"{a:.3f}/{b:.3f}" for a, b in runs)
                                        for name, runs in times.items()))


if __name__ == "__main__":
    main()
