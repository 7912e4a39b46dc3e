"""Markdown table of a validation sweep's continual result files (one row per file, sorted by benchmark, then
final average accuracy): ``python docs/tuning/summary.py docs/tuning/results/split-fmnist/*.json``.

Each file is validated first (``protobench validate`` rules); a file that fails is reported on stderr and left out.
Figures are percentages of the file's recorded metrics, which the validator recomputed from its accuracy matrix.
"""

from __future__ import annotations

import argparse
import json
import sys

from protobench.leaderboard.validate import validate_file

COLUMNS = (("average_accuracy", "A"), ("task_aware_average_accuracy", "task-aware A"), ("forgetting", "forgetting"))


def row(result: dict) -> list[str]:
    """The benchmark, configuration, split, the metrics of :data:`COLUMNS` (percent, blank when absent) and the
    training wall time (s) of one result."""
    metrics = result["metrics"]
    cells = [result["benchmark"]["name"], result["method"]["configuration"], result["benchmark"]["split"]]
    cells += [f"{100 * metrics[name]['value']:.2f}" if name in metrics else "" for name, _ in COLUMNS]
    return cells + [f"{result['budget']['train_wall_seconds']:.0f}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    results = []
    for path in args.files:
        problems = validate_file(path)
        if problems:
            print(f"{path}: left out: {problems[0]}", file=sys.stderr)
            continue
        results.append(json.loads(open(path, encoding="utf-8").read()))
    results.sort(key=lambda r: (r["benchmark"]["name"], -r["metrics"]["average_accuracy"]["value"]))
    header = ["benchmark", "configuration", "split", *(title + " (%)" for _, title in COLUMNS), "training (s)"]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * 3 + " ---: |" * (len(header) - 3))
    for result in results:
        print("| " + " | ".join(row(result)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
