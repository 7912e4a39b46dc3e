"""The ``protobench`` command line: ``run``, ``ls``, ``validate``.

Exit codes: 0 success; 1 a result file failed validation; 2 bad usage or input (unknown suite,
missing data); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DATA_ENV = "PROTOBENCH_DATA"


def pick_device(requested: str) -> str:
    """``auto`` -> cuda when present, else mps, else cpu; anything else is used as given."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _cmd_ls(args) -> int:
    from benchmarks.suites import SUITES

    for suite in SUITES.values():
        print(f"{suite.name:10s} {suite.description}")
        for run in suite.runs:
            tests = ", ".join(f"{t.spec.n_way}-way {t.spec.n_shot}-shot" for t in run.tests)
            print(f"  {run.name}: train {run.train_spec.n_way}-way {run.train_spec.n_shot}-shot x "
                  f"{run.train_episodes} episodes; test {tests}")
    return 0


def _cmd_run(args) -> int:
    import torch

    from benchmarks.protonet_runs import evaluate_run, train_or_load
    from benchmarks.suites import SUITES

    suite = SUITES.get(args.suite)
    if suite is None:
        print(f"unknown suite {args.suite!r}; known: {', '.join(SUITES)} (see `protobench ls`)", file=sys.stderr)
        return 2
    data_root = args.data_root or os.environ.get(DATA_ENV)
    if suite.needs_data_root and not data_root:
        print(f"suite {suite.name} needs data: pass --data-root PATH or set {DATA_ENV}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [run for run in suite.runs if not args.only or run.name in args.only]
    if not runs:
        print(f"--only matched no run of {suite.name}: {', '.join(r.name for r in suite.runs)}", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    out_dir = Path(args.out)
    try:
        sources, checksum = suite.load(Path(data_root) if data_root else None)
    except (OSError, ValueError) as error:
        print(f"cannot load the data of suite {suite.name}: {error}", file=sys.stderr)
        return 2
    rows = []
    for run in runs:
        learner, training = train_or_load(run, sources, out_dir, device, progress=not args.quiet)
        for result in evaluate_run(run, learner, training, sources["test"], out_dir, checksum, progress=not args.quiet):
            rows.append(result)
    print()
    print(f"{'benchmark':16s} {'method':10s} {'setting':18s} {'accuracy %':>18s} {'episodes':>9s}")
    for result in rows:
        mean, ci = result["metrics"]["mean_accuracy"]["value"], result["metrics"]["ci95"]["value"]
        print(f"{result['benchmark']['name']:16s} {result['method']['name']:10s} "
              f"{result['benchmark']['protocol']:18s} {100 * mean:11.2f} +- {100 * ci:4.2f} "
              f"{result['episodes']['n']:9d}")
    print(f"\n{len(rows)} result files in {out_dir}/")
    return 0


def _cmd_validate(args) -> int:
    from leaderboard.validate import validate_file

    failed = 0
    for path in args.files:
        problems = validate_file(path)
        if problems:
            failed += 1
            print(f"{path}: INVALID")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protobench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)

    ls = verbs.add_parser("ls", help="list suites and their runs")
    ls.set_defaults(handler=_cmd_ls)

    run = verbs.add_parser("run", help="train and evaluate a suite, writing one result file per setting")
    run.add_argument("suite", help="suite name (see `protobench ls`)")
    run.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    run.add_argument("--data-root", help=f"folder holding the datasets (default: ${DATA_ENV})")
    run.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps")
    run.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs of the suite")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=_cmd_run)

    validate = verbs.add_parser("validate", help="check result files; recompute their figures from the evidence")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(handler=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted; finished result files and checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
