"""protobench: run benchmark suites, validate, compare and submit result files, build the leaderboard.

verbs: ls, run, validate, compare, submit, leaderboard build   (`protobench VERB --help`);
`protobench --version` prints the version.

exit codes: 0 success; 1 a file failed validation, was refused, or the compared files are not
paired; 2 bad usage or input (unknown suite, method or benchmark, missing data); 130 interrupted
(finished result files and checkpoints are kept: run the same command again to resume).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

DATA_ENV = "PROTOBENCH_DATA"
NPROC_OPTION = "--nproc"


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
    from protobench.benchmarks.protocols import protocol_for
    from protobench.benchmarks.registry import benchmarks, methods
    from protobench.benchmarks.suite import load_suite, suite_names

    print("suites:")
    for name in suite_names():
        suite = load_suite(name)
        print(f"  {name:16s} [{suite.kind}] {suite.description}")
        protocol = protocol_for(suite.kind)
        for entry in suite.methods:
            print(f"    {entry.label}: {protocol.describe(entry)}")
    print("benchmarks:")
    for name, benchmark in benchmarks().items():
        where = f"needs {benchmark.data_folder}/" if benchmark.data_folder else "embedded"
        print(f"  {name:16s} [{benchmark.kind}, {where}] {benchmark.description}")
    print("methods:")
    for name, method in methods().items():
        print(f"  {name:16s} [{method.kind}] {method.description}  ({method.module})")
    return 0


def _is_nproc_option(name: str) -> bool:
    """Whether ``name`` (an option without ``=value``) is ``--nproc`` as argparse reads it: the full
    name or an abbreviation of it (argparse accepts any unambiguous prefix; ``--n`` is the shortest)."""
    return len(name) >= len("--n") and NPROC_OPTION.startswith(name)


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` (the command line after ``protobench``) without its ``--nproc`` option.

    Removes every spelling argparse accepts: ``--nproc N``, ``--nproc=N`` and their abbreviations
    (``--np 2``, ``--npr=2``); arguments after a bare ``--`` are left alone. ``argv`` must be one
    that :func:`build_parser` has already parsed, so that an abbreviation cannot mean another option.
    """
    kept: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            kept += [token, *tokens]
            break
        name, equals, _ = token.partition("=")
        if token.startswith("--") and _is_nproc_option(name):
            if not equals:
                next(tokens, None)  # the value is the next token
            continue
        kept.append(token)
    return kept


def torchrun_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The command that runs ``protobench <argv>`` in ``nproc`` processes on this machine with torchrun.

    ``--nproc`` is taken out of ``argv`` (:func:`without_nproc`); the processes see ``WORLD_SIZE``
    and run the command themselves rather than launching again.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "protobench", *without_nproc(argv)]


def torchrun_environment(environ: Mapping[str, str], *, threads: int = 0, quiet: bool = False) -> dict[str, str]:
    """The environment for :func:`torchrun_command`: a copy of ``environ`` with ``OMP_NUM_THREADS``
    set, and with ``quiet``, torchrun's own log lines turned off.

    ``OMP_NUM_THREADS`` is ``threads`` when given (``--threads``), else the value already in
    ``environ``, else 1: the value torchrun would choose, set here so that torchrun does not
    print its banner warning about choosing it. With ``quiet``, ``LOGLEVEL=ERROR`` silences the
    launcher's INFO and WARNING lines (torch.distributed.elastic reads ``LOGLEVEL``) and
    ``TORCH_CPP_LOG_LEVEL=ERROR`` the C++ warnings of the process group; errors, a failed
    worker's report included, are still printed. ``environ`` is not modified.
    """
    env = dict(environ)
    env["OMP_NUM_THREADS"] = str(threads) if threads > 0 else env.get("OMP_NUM_THREADS", "1")
    if quiet:
        env["LOGLEVEL"] = "ERROR"
        env["TORCH_CPP_LOG_LEVEL"] = "ERROR"
    return env


def _launch_torchrun(args) -> int:
    """Re-run this command under torchrun with ``args.nproc`` processes on this machine; its exit status."""
    command = torchrun_command(args.argv, args.nproc)
    return subprocess.call(command, env=torchrun_environment(os.environ, threads=args.threads, quiet=args.quiet))


def _cmd_run(args) -> int:
    import torch

    from protobench.benchmarks.distributed import close, init_from_environment, world
    from protobench.benchmarks.registry import MethodParamsError
    from protobench.benchmarks.runner import SuiteError, check_suite, run_suite
    from protobench.benchmarks.suite import load_suite

    data_root = args.data_root or os.environ.get(DATA_ENV)
    data_root = Path(data_root) if data_root else None
    try:  # everything that can be wrong with the command is found before processes start
        suite = load_suite(args.suite).select(args.methods, args.seeds)
        check_suite(suite, data_root)
        device = pick_device(args.device)
        if args.nproc > 1 and suite.kind == "continual":
            raise ValueError(f"suite {suite.name!r} is continual: its units train experience by experience in one "
                             "process; drop --nproc (use --threads for more CPU threads)")
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
    except (OSError, SuiteError, MethodParamsError) as error:
        print(f"suite {suite.name}: {error}", file=sys.stderr)
        return 2
    finally:
        rank = world()[0]
        close()
    if rank == 0:
        from protobench.leaderboard.page import build_site_report

        print(summary_table(results))
        site = build_site_report(out_dir, out_dir / "site")
        left_out = f" ({len(site.skipped)} files not ranked, listed on the page)" if site.skipped else ""
        print(f"{len(results)} result files in {out_dir}/; leaderboard page: {site.index}{left_out}")
    return 0


def summary_table(results: list[dict]) -> str:
    """Plain-text tables: few-shot results (benchmark, method configuration, setting, accuracy % with
    95% CI, episodes), then continual ones (benchmark, configuration, seed, final average accuracy,
    task-aware average accuracy and forgetting, in percent)."""
    fewshot = [r for r in results if r["kind"] == "fewshot"]
    continual = [r for r in results if r["kind"] == "continual"]
    tables = []
    if fewshot or not continual:
        lines = [f"{'benchmark':16s} {'method':20s} {'setting':24s} {'accuracy %':>16s} {'episodes':>9s}"]
        for result in fewshot:
            mean, ci95 = result["metrics"]["mean_accuracy"]["value"], result["metrics"]["ci95"]["value"]
            lines.append(f"{result['benchmark']['name']:16s} {result['method']['configuration']:20s} "
                         f"{result['benchmark']['protocol']:24s} {100 * mean:9.2f} +- {100 * ci95:4.2f} "
                         f"{result['episodes']['n']:9d}")
        tables.append("\n".join(lines))
    if continual:
        lines = [f"{'benchmark':20s} {'method':24s} {'seed':>5s} {'A %':>7s} {'task-aware A %':>15s} "
                 f"{'forgetting %':>13s}"]
        for result in continual:
            metrics = result["metrics"]

            def percent(name: str, metrics=metrics) -> str:
                value = metrics.get(name, {}).get("value")
                return "n/a" if value is None else f"{100 * value:.2f}"

            lines.append(f"{result['benchmark']['name']:20s} {result['method']['configuration']:24s} "
                         f"{result['seeds']['seed']:5d} {percent('average_accuracy'):>7s} "
                         f"{percent('task_aware_average_accuracy'):>15s} {percent('forgetting'):>13s}")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def _read_result(path: str) -> dict:
    """A result file that has just passed validation, read again the same bounded way."""
    from protobench.leaderboard.validate import parse_json, read_bounded

    content, problem = read_bounded(path)
    if content is None:
        raise OSError(problem)
    return parse_json(content.decode("utf-8"))


def _cmd_validate(args) -> int:
    from protobench.leaderboard.validate import validate_file

    rederiver = None
    if args.data_root is not None:
        from protobench.benchmarks.rederive import EpisodeRederiver

        rederiver = EpisodeRederiver(Path(args.data_root))
    failed = 0
    for path in args.files:
        problems = validate_file(path)
        if not problems and rederiver is not None:
            problems = rederiver.problems(_read_result(path))
        print(f"{path}: {'INVALID' if problems else 'ok'}")
        for problem in problems:
            print(f"  {problem}")
        failed += bool(problems)
    return 1 if failed else 0


def _cmd_compare(args) -> int:
    from protobench.leaderboard.compare import compare_continual, compare_results
    from protobench.leaderboard.validate import validate_file

    if args.against is None and len(args.files) != 2:
        args.parser.error("give two files A.json B.json, or A files --against B files (continual, paired by seed)")
    files_a, files_b = (args.files, args.against) if args.against is not None else (args.files[:1], args.files[1:])
    for path in (*files_a, *files_b):
        problems = validate_file(path)
        if problems:
            print(f"{path} is not a valid result file:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
    results_a, results_b = ([json.loads(Path(path).read_text()) for path in files] for files in (files_a, files_b))
    try:
        if all(r.get("kind") == "continual" for r in (*results_a, *results_b)):
            _print_continual_comparison(compare_continual(results_a, results_b))
            return 0
        if len(results_a) != 1 or len(results_b) != 1:
            raise ValueError("few-shot results compare one file against one")
        comparison = compare_results(results_a[0], results_b[0])
    except ValueError as error:
        print(f"cannot compare: {error}", file=sys.stderr)
        return 1
    c = comparison
    verdict = "significant" if c.significant else "not significant"
    width = max(len(c.method_a), len(c.method_b))
    print(f"A {c.method_a:{width}s}  {100 * c.mean_a:6.2f} +- {100 * c.ci95_a:.2f} % (95% CI)\n"
          f"B {c.method_b:{width}s}  {100 * c.mean_b:6.2f} +- {100 * c.ci95_b:.2f} % (95% CI)\n"
          f"A - B over {c.n_episodes} identical episodes: {100 * c.difference:+.2f} +- {100 * c.ci95:.2f} points "
          f"(paired 95% CI; {verdict})")
    return 0


def _print_continual_comparison(comparison) -> None:
    """One line per metric: A's and B's means over seeds, the mean paired difference and its 95% t interval."""
    print(f"A {comparison.method_a}\nB {comparison.method_b}\n"
          f"paired over seeds {', '.join(map(str, comparison.seeds))} (identical streams); percent:")
    print(f"{'metric':30s} {'A':>7s} {'B':>7s} {'A - B':>7s}  95% t interval of A - B")
    for name in comparison.metrics:
        mean_a, mean_b, difference, half_width = comparison.summary(name)
        interval = "n/a (one seed)" if math.isnan(half_width) else f"+- {100 * half_width:.2f}" + (
            " (significant)" if abs(difference) > half_width else " (not significant)")
        print(f"{name:30s} {100 * mean_a:7.2f} {100 * mean_b:7.2f} {100 * difference:+7.2f}  {interval}")


def _results_dir(args) -> Path:
    """``--results-dir``, else ``./leaderboard/results`` when it exists; otherwise a usage error (exit 2)."""
    from protobench.leaderboard.submit import CHECKOUT_RESULTS_DIR, default_results_dir

    if args.results_dir is not None:
        return Path(args.results_dir)
    folder = default_results_dir()
    if folder is None:
        args.parser.error(f"--results-dir is required here: there is no ./{CHECKOUT_RESULTS_DIR.as_posix()} in "
                          f"{Path.cwd()} (run from the root of a leaderboard repository's checkout, or pass "
                          "--results-dir DIR)")
    return folder


def _cmd_submit(args) -> int:
    from protobench.leaderboard.submit import SubmissionError, submit
    from protobench.leaderboard.validate import validate_file

    results_dir = _results_dir(args)
    rederiver = None
    if args.data_root is not None:
        from protobench.benchmarks.rederive import EpisodeRederiver

        rederiver = EpisodeRederiver(Path(args.data_root))
    refused = 0
    for path in args.files:
        try:
            if rederiver is not None:
                problems = validate_file(path) or rederiver.problems(_read_result(path))
                if problems:
                    raise SubmissionError(f"{path} failed validation against the data:\n  " + "\n  ".join(problems))
            print(f"{path}: accepted as {submit(path, results_dir)}")
        except SubmissionError as error:
            print(f"refused: {error}", file=sys.stderr)
            refused += 1
        except OSError as error:  # the results folder cannot be written: not the file's fault, but not accepted
            print(f"refused: {path}: cannot write into {results_dir}: {error}", file=sys.stderr)
            refused += 1
    return 1 if refused else 0


def _cmd_leaderboard(args) -> int:
    import warnings

    from protobench.leaderboard.page import build_site_report

    results_dir = _results_dir(args)
    try:
        with warnings.catch_warnings(record=True) as caught:  # printed below as one line each
            warnings.simplefilter("always")
            site = build_site_report(results_dir, Path(args.out))
    except OSError as error:
        print(f"cannot write the leaderboard into {args.out}: {error}", file=sys.stderr)
        return 1
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    for skipped in site.skipped:
        print(skipped, file=sys.stderr)
    left_out = f"; {len(site.skipped)} skipped (listed above and on the page)" if site.skipped else ""
    print(f"leaderboard written to {site.index} from {site.n_results} valid result files{left_out}")
    return 0


RESULTS_DIR_HELP = ("folder of accepted result files (default: ./leaderboard/results when the working directory "
                    "has one, i.e. in a checkout of a leaderboard repository; required anywhere else)")


def build_parser() -> argparse.ArgumentParser:
    """The ``protobench`` argument parser: one subparser per verb, each with a description
    (what it does, what it reads, what it writes) and ``handler`` set to the function that runs it."""
    from protobench import __version__
    from protobench.leaderboard.ranking import MIN_EPISODES

    parser = argparse.ArgumentParser(prog="protobench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"protobench {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    ls = verbs.add_parser("ls", help="list suites, benchmarks and methods",
                          description="List what can be run: the suites (kind, methods, training and test "
                                      "settings), the registered benchmarks (embedded, or the data folder each "
                                      "needs) and the methods, built-in and from installed packages' "
                                      "`protobench.methods` entry points. Reads nothing else; prints to stdout.")
    ls.set_defaults(handler=_cmd_ls)

    run = verbs.add_parser("run", help="run a suite: train, evaluate, one result file per test setting",
                           description="Check SUITE (a name from `protobench ls` or a .toml file), then run every "
                                       "unit (benchmark x method x seed): train or reuse the weights in "
                                       "OUT/checkpoints/, evaluate, and write one result JSON per test setting "
                                       "into OUT; then print a summary table and build a leaderboard page in "
                                       "OUT/site/. Datasets that are not embedded are read from --data-root. "
                                       "Units whose result files exist and validate are skipped, so an "
                                       "interrupted run resumes where it stopped.")
    run.add_argument("suite", help="suite name (see `protobench ls`) or path to a suite .toml")
    run.add_argument("--methods", nargs="+", metavar="NAME", help="only these method labels/names; a registered "
                     "method the suite does not list is run untrained on the suite's tests")
    run.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="seeds instead of the suite's")
    run.add_argument("--out", default="runs/latest", help="output folder (default: runs/latest)")
    run.add_argument("--data-root", help=f"folder holding the datasets (default: ${DATA_ENV})")
    run.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps")
    run.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    run.add_argument("--nproc", type=int, default=1, help="processes on this machine, launched with torchrun "
                     "(OMP_NUM_THREADS defaults to 1 per process, or --threads)")
    run.add_argument("--quiet", action="store_true", help="no progress bars, and no torchrun log lines with --nproc")
    run.set_defaults(handler=_cmd_run)

    validate = verbs.add_parser("validate", help="check result files; recompute their figures from the evidence",
                                description="Check each result FILE against the result-file JSON Schema, then "
                                            "recompute every derived figure (mean, CI, continual metrics, episode "
                                            "digest) from the evidence the file holds. Prints `ok` or `INVALID` "
                                            "and the problems per file; writes nothing. Exit 1 if any is invalid.")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--data-root", metavar="DIR",
                          help="also re-derive each few-shot file's test episodes from its recorded key, spec and "
                               "the dataset under DIR, and check the episode digest, n_classes and dataset checksum "
                               "(embedded benchmarks need no data, but the flag is still what turns the check on)")
    validate.set_defaults(handler=_cmd_validate)

    compare = verbs.add_parser("compare", help="both means and their paired difference on identical episodes",
                               description="Compare two valid few-shot result files A and B evaluated on identical "
                                           "episodes (same episode digest: same benchmark, test setting and seed). "
                                           "Prints each method's mean accuracy with its 95% CI, then the paired "
                                           "difference A - B with its 95% CI and whether it is significant (the "
                                           "interval excludes 0). Continual results: `compare A1.json A2.json ... "
                                           "--against B1.json B2.json ...` (one file per seed and side) pairs the "
                                           "two configurations by seed on identical streams and prints each "
                                           "metric's means, the mean difference A - B and its 95% t interval over "
                                           "seeds. Writes nothing. Exit 1 if a file is invalid or the episodes "
                                           "(streams) differ.")
    compare.add_argument("files", nargs="+", metavar="A.json", help="A and B (few-shot), or the A side's files")
    compare.add_argument("--against", nargs="+", metavar="B.json",
                         help="the B side's files (continual results, one per seed)")
    compare.set_defaults(handler=_cmd_compare, parser=compare)

    submit = verbs.add_parser("submit", help="validate result files and accept them into the leaderboard",
                              description="Validate each result FILE and copy it into the results folder under a "
                                          "content-addressed name (<benchmark>__<configuration>__<protocol>__"
                                          "<sha256, 16 hex>.json, each part lowercase letters, digits and hyphens); "
                                          "prints the accepted path. Refuses invalid files, few-shot files with "
                                          f"fewer than {MIN_EPISODES} test episodes (the leaderboard's minimum), "
                                          "files already accepted and a second file of the same run (exit 1).")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--results-dir", help=RESULTS_DIR_HELP)
    submit.add_argument("--data-root", metavar="DIR", help="also re-derive each file's test episodes from the data "
                        "under DIR and refuse files whose digest, n_classes or dataset checksum disagree "
                        "(see `protobench validate --data-root`)")
    submit.set_defaults(handler=_cmd_submit, parser=submit)

    board = verbs.add_parser("leaderboard", help="leaderboard tools",
                             description="Leaderboard tools; `protobench leaderboard build --help` for the one verb.")
    board_verbs = board.add_subparsers(dest="board_verb", required=True, metavar="VERB")
    build = board_verbs.add_parser("build", help="write the static page and the Markdown table",
                                   description="Rank the valid result files of the results folder (per benchmark, "
                                               "Meta-Dataset tie rule, then average rank) and write OUT/index.html "
                                               "(a self-contained page: tables, CI error bars, accuracy-vs-shots "
                                               "lines, continual heatmaps) and OUT/leaderboard.md. One bad file "
                                               "never stops the build: invalid files, few-shot files with fewer than "
                                               f"{MIN_EPISODES} test episodes and charts that cannot be drawn are "
                                               "skipped, each with a line `skipped NAME: REASON` on stderr and on "
                                               "the page.")
    build.add_argument("--results-dir", help=RESULTS_DIR_HELP)
    build.add_argument("--out", default="leaderboard/site", help="output folder (default: %(default)s)")
    build.set_defaults(handler=_cmd_leaderboard, parser=build)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``protobench <argv>`` (default: ``sys.argv[1:]``); return the exit status (see the module
    docstring). Usage errors raise SystemExit(2) from argparse, ``--version`` and ``--help`` SystemExit(0)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted; finished result files and checkpoints are kept: run again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`protobench ls | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
