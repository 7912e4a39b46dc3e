"""Continual rows of the leaderboard: per stream, each method configuration's metrics over seeds, ranked.

* A continual *benchmark* is the pair (``benchmark.name``, ``benchmark.protocol``) of files of kind
  ``"continual"`` evaluated on the test split (files run on a validation split are left out).
* A *row* is a method configuration (:func:`protobench.leaderboard.identity.configuration_of`).
  Its files are its seeds: each metric is reported as the mean and the sample standard deviation
  (ddof=1; 0 with one seed) of the per-file values, with the number of seeds. One file per seed
  key: a second file with the same ``seeds.seed`` is left out.
* Rows rank by final average accuracy (the task-aware one on task-incremental streams, where the
  task id is given at test time) with the tie rule of DESIGN.md applied to the per-seed values:
  two rows tie when their means differ by less than 1.96 * sqrt(s1^2/n1 + s2^2/n2), s the std over
  seeds and n the number of seeds (:func:`protobench.leaderboard.ranking.rank`).
* The mean accuracy matrix over a row's seeds is kept for the page's heatmap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from protobench.leaderboard.identity import configuration_of
from protobench.leaderboard.ranking import MethodStats, Skipped, display_text, markdown_cell, rank, source_name

METRICS = ("average_accuracy", "task_aware_average_accuracy", "average_incremental_accuracy", "forgetting", "bwt",
           "fwt")
"""Metrics summarised over seeds, in table order."""
HEADINGS = {"average_accuracy": "A (%)", "task_aware_average_accuracy": "task-aware A (%)",
            "average_incremental_accuracy": "avg. incremental (%)", "forgetting": "forgetting (%)",
            "bwt": "BWT (%)", "fwt": "FWT (%)"}


@dataclass
class ContinualTable:
    """One continual benchmark's ranked rows.

    Each row: ``configuration``, ``method``, ``rank``, ``n_seeds``, ``seeds`` (root seeds),
    ``pretraining``, ``metrics`` ({name: (mean, std) or None when a seed lacks it}) and
    ``mean_matrix`` (the task-agnostic accuracy matrix averaged over seeds, a list of lists).
    ``ranked_on`` names the metric that ranks the rows.
    """

    name: str
    protocol: str
    ranked_on: str
    rows: list[dict]

    @property
    def label(self) -> str:
        return f"{self.name} {self.protocol}"


def _metric_values(results: list[dict], name: str) -> list[float] | None:
    values = [r["metrics"].get(name, {}).get("value") for r in results]
    return None if any(v is None for v in values) else [float(v) for v in values]


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def _identity(result: dict) -> tuple[tuple[str, str], str, object]:
    """((benchmark name, protocol), configuration, root seed) of a continual result; KeyError or
    TypeError when a field the table needs is missing."""
    benchmark, seeds = result["benchmark"], result["seeds"]
    missing = [name for name in ("name", "protocol", "split", "stream_spec") if name not in benchmark]
    if missing:
        raise KeyError(f"benchmark.{missing[0]}")
    if not isinstance(seeds, dict) or not isinstance(result["evidence"]["accuracy_matrix"], list):
        raise TypeError("seeds must be an object and evidence.accuracy_matrix a list")
    return ((display_text(benchmark["name"]), display_text(benchmark["protocol"])),
            display_text(configuration_of(result)), seeds.get("seed"))


def continual_tables(results: Iterable[dict]) -> tuple[list[ContinualTable], list[Skipped]]:
    """The ranked continual tables of ``results`` (already validated files), and the files left out."""
    grouped: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    skipped: list[Skipped] = []
    for result in results:
        if result.get("kind") != "continual":
            continue
        try:
            key, configuration, seed = _identity(result)
        except (KeyError, TypeError, ValueError) as error:
            skipped.append(Skipped(source_name(result), f"not a complete continual result ({error!r})"))
            continue
        if result["benchmark"]["split"] != "test":
            skipped.append(Skipped(source_name(result), "evaluated on a validation split, not ranked"))
            continue
        rows = grouped[key][configuration]
        if any(r["seeds"].get("seed") == seed for r in rows):
            skipped.append(Skipped(source_name(result), f"a second file of seed {display_text(seed)} for this "
                                   "configuration and benchmark"))
            continue
        rows.append(result)
    tables = []
    for (name, protocol), by_configuration in sorted(grouped.items()):
        scenarios = {r["benchmark"]["stream_spec"]["scenario"] for rs in by_configuration.values() for r in rs}
        ranked_on = "task_aware_average_accuracy" if scenarios == {"task-incremental"} else "average_accuracy"
        stats, details = [], {}
        for configuration, files in by_configuration.items():
            values = _metric_values(files, ranked_on)
            if values is None:
                skipped += [Skipped(source_name(r), f"no {ranked_on} to rank on") for r in files]
                continue
            mean, std = _mean_std(values)
            pretraining = sorted({display_text(p) for r in files if (p := r["method"].get("pretraining"))})
            stats.append(MethodStats(configuration, "; ".join(sorted({display_text(r["method"]["name"])
                                                                      for r in files})),
                                     mean, std, len(files), values, [dict(r["seeds"]) for r in files],
                                     "; ".join(pretraining) or None))
            metrics = {m: (_mean_std(v) if (v := _metric_values(files, m)) is not None else None) for m in METRICS}
            matrices = [np.asarray(r["evidence"]["accuracy_matrix"], dtype=np.float64) for r in files]
            same_shape = all(m.shape == matrices[0].shape for m in matrices)
            details[configuration] = {"metrics": metrics,
                                      "mean_matrix": np.mean(matrices, axis=0).tolist() if same_shape else None}
        rows = [{"configuration": row["configuration"], "method": row["method"], "rank": row["rank"],
                 "n_seeds": row["n"], "seeds": [s.get("seed") for s in row["seeds"]],
                 "pretraining": row["pretraining"], **details[row["configuration"]]} for row in rank(stats)]
        if rows:
            tables.append(ContinualTable(name, protocol, ranked_on, rows))
    return tables, skipped


def percent_summary(summary: tuple[float, float] | None) -> str:
    """``"71.20 ± 1.05"``: a (mean, std) pair of fractions in percent; ``"n/a"`` for None."""
    return "n/a" if summary is None else f"{100 * summary[0]:.2f} ± {100 * summary[1]:.2f}"


def continual_markdown(tables: list[ContinualTable]) -> str:
    """The continual tables as Markdown: one per benchmark, each metric as mean ± std over seeds (percent)."""
    lines = ["## Continual leaderboard", "",
             "Each metric: mean ± std over seeds (percent). Rows rank by final average accuracy (task-aware on "
             "task-incremental streams) with the tie rule applied to the per-seed values.", ""]
    if not tables:
        return "\n".join([*lines, "No accepted continual results yet.", ""])
    for table in tables:
        lines += [f"### {markdown_cell(table.name)}: {markdown_cell(table.protocol)}", "",
                  "| configuration | method | " + " | ".join(HEADINGS[m] for m in METRICS) + " | seeds | rank |",
                  "| --- | --- | " + " | ".join("---:" for _ in METRICS) + " | ---: | ---: |"]
        for row in table.rows:
            cells = " | ".join(percent_summary(row["metrics"][m]) for m in METRICS)
            identity = f"{markdown_cell(row['configuration'])} | {markdown_cell(row['method'])}"
            lines.append(f"| {identity} | {cells} | {row['n_seeds']} | {row['rank']:g} |")
        lines.append("")
    return "\n".join(lines)
