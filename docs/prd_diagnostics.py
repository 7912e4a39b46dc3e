"""PRD diagnostics: each loss term and the drift of the old classes' prototypes, experience by experience.

Reads continual result files of method ``prd`` (any configurations, any seeds) and, per configuration
and experience, averages over the seeds what the learner recorded (``training.experiences``): the
SupCon term, the prototype loss, the relation distillation (unweighted; blank where it was not
computed: the first experience, or ``distill_coef`` 0) and the prototype drift (mean over the old
classes of 1 - cos(prototype before, after) the experience). Each term is the per-image mean over the
experience's last epoch. It also gives the accuracy on the experience just learnt (the diagonal of R)
and, the point of it all, on the old experiences after it (mean of R[i][j], j < i).

It writes the table as CSV and a plot (one panel per quantity, one line per configuration) and prints
the table in Markdown.

Run::

    python docs/prd_diagnostics.py leaderboard/results/split-fmnist__prd*.json --out docs/prd-diagnostics-split-fmnist
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402 - after choosing the backend

QUANTITIES = (("supcon", "SupCon term"), ("prototype", "prototype loss"), ("distill", "distillation (unweighted)"),
              ("prototype_drift", "old prototypes' drift (1 - cos)"),
              ("new_accuracy", "accuracy on the new experience (%)"),
              ("old_accuracy", "accuracy on the old experiences (%)"))


def experience_rows(result: dict) -> list[dict]:
    """One dict per experience of one result: the recorded terms, and the new and old accuracies (percent)."""
    matrix = result["evidence"]["accuracy_matrix"]
    rows = []
    for i, record in enumerate(result["training"]["experiences"]):
        old = [100 * matrix[i][j] for j in range(i)]
        rows.append({"supcon": record.get("supcon"), "prototype": record.get("prototype"),
                     "distill": record.get("distill"), "prototype_drift": record.get("prototype_drift"),
                     "new_accuracy": 100 * matrix[i][i], "old_accuracy": statistics.mean(old) if old else None})
    return rows


def table(paths: list[Path]) -> dict[tuple[str, str], list[dict]]:
    """(benchmark, configuration) -> per experience: each quantity's mean over seeds (None when never
    recorded) and the number of seeds."""
    runs: dict[tuple[str, str], list[list[dict]]] = {}
    for path in paths:
        result = json.loads(path.read_text(encoding="utf-8"))
        if result.get("kind") != "continual" or result["method"]["name"] != "prd":
            continue
        key = (result["benchmark"]["name"], result["method"]["configuration"])
        runs.setdefault(key, []).append(experience_rows(result))
    summary = {}
    for key, seeds in sorted(runs.items()):
        rows = []
        for i in range(min(len(seed) for seed in seeds)):
            row: dict = {"seeds": len(seeds)}
            for name, _ in QUANTITIES:
                values = [seed[i][name] for seed in seeds if seed[i][name] is not None]
                row[name] = statistics.mean(values) if values else None
            rows.append(row)
        summary[key] = rows
    return summary


def cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def write_csv(summary: dict, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benchmark", "configuration", "experience", "seeds", *(name for name, _ in QUANTITIES)])
        for (benchmark, configuration), rows in summary.items():
            for i, row in enumerate(rows, start=1):
                values = (cell(row[name]) for name, _ in QUANTITIES)
                writer.writerow([benchmark, configuration, i, row["seeds"], *values])


def plot(summary: dict, path: Path) -> None:
    fig = Figure(figsize=(4.2 * 3, 3.3 * 2))
    colours = {key: f"C{i}" for i, key in enumerate(summary)}  # one colour per configuration in every panel
    for index, (name, title) in enumerate(QUANTITIES, start=1):
        ax = fig.add_subplot(2, 3, index)
        for (benchmark, configuration), rows in summary.items():
            points = [(i, row[name]) for i, row in enumerate(rows, start=1) if row[name] is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=colours[benchmark, configuration],
                        label=f"{configuration} ({benchmark})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("experience")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if index == 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="continual result files of method prd")
    parser.add_argument("--out", type=Path, required=True, help="output stem: writes <out>.csv and <out>.png")
    args = parser.parse_args(argv)
    summary = table(args.results)
    if not summary:
        raise SystemExit("no continual result files of method prd among the given files")
    write_csv(summary, args.out.with_suffix(".csv"))
    plot(summary, args.out.with_suffix(".png"))
    print("| configuration | experience | " + " | ".join(title for _, title in QUANTITIES) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in QUANTITIES) + " |")
    for (_, configuration), rows in summary.items():
        for i, row in enumerate(rows, start=1):
            print(f"| {configuration} | {i} | " + " | ".join(cell(row[name]) for name, _ in QUANTITIES) + " |")
    print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
