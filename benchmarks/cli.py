"""protobench: run benchmark suites, validate, compare and submit result files, build the leaderboard.

verbs: ls, run, validate, compare, submit, leaderboard build   (`protobench VERB --help`)

exit codes: 0 success; 1 a file failed validation, was refused, or the compared files are not
paired; 2 bad usage or input (unknown suite, method or benchmark, missing data); 130 interrupted
(finished result files and checkpoints are kept: run the same command again to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DATA_ENV = "PROTOBENCH_DATA"


def pick_device(requested: str) -> str:
    """``auto`` -> cuda when present, else mps, else cpu; ``cpu``, ``cuda``, ``cuda:N`` and ``mps``
    are checked to exist here. ValueError says what is wrong and what is available."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    available = ", ".join(["auto", "cpu", *(["cuda", "cuda:N"] if cuda else []), *(["mps"] if mps else [])])
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {requested}: not a device; available here: {available}") from None
    if device.type == "cuda":
        if not cuda:
            raise ValueError(f"--device {requested}: CUDA is not available on this machine; available: {available}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not mps:
        raise ValueError(f"--device {requested}: MPS is not available on this machine; available: {available}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {requested}: not supported; available here: {available}")
    return requested


def _cmd_ls(args) -> int:
    from protobench.benchmarks.registry import benchmarks, methods
    from protobench.benchmarks.suite import load_suite, suite_names

    print("suites:")
    for name in suite_names():
        suite = load_suite(name)
        print(f"  {name:16s} [{suite.kind}] {suite.description}")
        for entry in suite.methods:
            tests = ", ".join(t.spec.key for t in entry.tests)
            train = f"train {entry.train.spec.key} x {entry.train.episodes}" if entry.train else "no training"
            print(f"    {entry.label}: {entry.method}, {train}; test {tests}")
    print("benchmarks:")
    for name, benchmark in benchmarks().items():
        where = f"needs {benchmark.data_folder}/" if benchmark.data_folder else "embedded"
        print(f"  {name:16s} [{benchmark.kind}, {where}] {benchmark.description}")
    print("methods:")
    for name, method in methods().items():
        print(f"  {name:16s} [{method.kind}] {method.description}  ({method.module})")
    return 0


def _launch_torchrun(args) -> int:
    """Re-run this command under torchrun with ``args.nproc`` processes on this machine."""
    argv = list(args.argv)
    at = argv.index("--nproc")
    del argv[at : at + 2]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "protobench", *argv]
    return subprocess.call(command)


def _cmd_run(args) -> int:
    import torch

    from protobench.benchmarks.distributed import close, init_from_environment, world
    from protobench.benchmarks.runner import SuiteError, check_suite, run_suite
    from protobench.benchmarks.suite import load_suite

    data_root = args.data_root or os.environ.get(DATA_ENV)
    data_root = Path(data_root) if data_root else None
    try:  # everything that can be wrong with the command is found before processes start
        suite = load_suite(args.suite).select(args.methods, args.seeds)
        check_suite(suite, data_root)
        device = pick_device(args.device)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = init_from_environment(device)
    out_dir = Path(args.out)
    try:
        results = run_suite(suite, out_dir=out_dir, data_root=data_root, device=device, progress=not args.quiet)
    except (OSError, SuiteError) as error:
        print(f"suite {suite.name}: {error}", file=sys.stderr)
        return 2
    finally:
        rank = world()[0]
        close()
    if rank == 0:
        from protobench.leaderboard.page import build_site

        print(summary_table(results))
        print(f"{len(results)} result files in {out_dir}/; leaderboard page: {build_site(out_dir, out_dir / 'site')}")
    return 0


def summary_table(results: list[dict]) -> str:
    """A plain-text table: benchmark, method configuration, setting, accuracy % with 95% CI, episodes."""
    lines = [f"{'benchmark':16s} {'method':20s} {'setting':24s} {'accuracy %':>16s} {'episodes':>9s}"]
    for result in results:
        mean, ci95 = result["metrics"]["mean_accuracy"]["value"], result["metrics"]["ci95"]["value"]
        lines.append(f"{result['benchmark']['name']:16s} {result['method']['configuration']:20s} "
                     f"{result['benchmark']['protocol']:24s} {100 * mean:9.2f} +- {100 * ci95:4.2f} "
                     f"{result['episodes']['n']:9d}")
    return "\n".join(lines)


def _cmd_validate(args) -> int:
    from protobench.leaderboard.validate import validate_file

    failed = 0
    for path in args.files:
        problems = validate_file(path)
        print(f"{path}: {'INVALID' if problems else 'ok'}")
        for problem in problems:
            print(f"  {problem}")
        failed += bool(problems)
    return 1 if failed else 0


def _cmd_compare(args) -> int:
    from protobench.leaderboard.compare import compare_results
    from protobench.leaderboard.validate import validate_file

    for path in (args.a, args.b):
        problems = validate_file(path)
        if problems:
            print(f"{path} is not a valid result file:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
    try:
        comparison = compare_results(json.loads(Path(args.a).read_text()), json.loads(Path(args.b).read_text()))
    except ValueError as error:
        print(f"cannot compare: {error}", file=sys.stderr)
        return 1
    verdict = "significant" if comparison.significant else "not significant"
    print(f"A ({comparison.method_a}) - B ({comparison.method_b}) over {comparison.n_episodes} identical episodes: "
          f"{100 * comparison.difference:+.2f} +- {100 * comparison.ci95:.2f} points (95% CI; {verdict})")
    return 0


def _cmd_submit(args) -> int:
    from protobench.leaderboard.submit import SubmissionError, submit

    refused = 0
    for path in args.files:
        try:
            print(f"{path}: accepted as {submit(path, Path(args.results_dir))}")
        except SubmissionError as error:
            print(f"refused: {error}", file=sys.stderr)
            refused += 1
    return 1 if refused else 0


def _cmd_leaderboard(args) -> int:
    from protobench.leaderboard.page import build_site

    page = build_site(Path(args.results_dir), Path(args.out))
    print(f"leaderboard written to {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from protobench.leaderboard.submit import RESULTS_DIR

    parser = argparse.ArgumentParser(prog="protobench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    verbs.add_parser("ls", help="list suites, benchmarks and methods").set_defaults(handler=_cmd_ls)

    run = verbs.add_parser("run", help="run a suite: train, evaluate, one result file per test setting",
                           description="Run every unit of SUITE. Units whose result files exist and validate "
                                       "are skipped, so an interrupted run resumes where it stopped.")
    run.add_argument("suite", help="suite name (see `protobench ls`) or path to a suite .toml")
    run.add_argument("--methods", nargs="+", metavar="NAME", help="only these method labels/names; a registered "
                     "method the suite does not list is run untrained on the suite's tests")
    run.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="seeds instead of the suite's")
    run.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    run.add_argument("--data-root", help=f"folder holding the datasets (default: ${DATA_ENV})")
    run.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps")
    run.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--nproc", type=int, default=1, help="processes on this machine, launched with torchrun")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=_cmd_run)

    validate = verbs.add_parser("validate", help="check result files; recompute their figures from the evidence")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(handler=_cmd_validate)

    compare = verbs.add_parser("compare", help="paired difference of two results on identical episodes")
    compare.add_argument("a", metavar="A.json")
    compare.add_argument("b", metavar="B.json")
    compare.set_defaults(handler=_cmd_compare)

    submit = verbs.add_parser("submit", help="validate result files and accept them into the leaderboard")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--results-dir", default=str(RESULTS_DIR), help="accepted files (default: %(default)s)")
    submit.set_defaults(handler=_cmd_submit)

    board = verbs.add_parser("leaderboard", help="leaderboard tools")
    board_verbs = board.add_subparsers(dest="board_verb", required=True, metavar="VERB")
    build = board_verbs.add_parser("build", help="write the static page and the Markdown table")
    build.add_argument("--results-dir", default=str(RESULTS_DIR), help="accepted files (default: %(default)s)")
    build.add_argument("--out", default="leaderboard/site", help="output folder (default: %(default)s)")
    build.set_defaults(handler=_cmd_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted; finished result files and checkpoints are kept: run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
