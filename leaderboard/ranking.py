"""Rank method configurations on the accepted few-shot result files (the Meta-Dataset rule).

Data flow: ``load_accepted(folder)`` -> ``leaderboard_table(results)`` -> ``markdown(board)``.

* A *benchmark* for ranking is the pair (``benchmark.name``, ``benchmark.protocol``), labelled
  ``"<name> <protocol>"`` (for example ``"omniglot 5-way 1-shot 15-query"``).
* A *row* is a method configuration, :func:`protobench.leaderboard.identity.configuration_of`
  (the suite label, or ``<name>@<params hash>``), never the bare ``method.name``: two
  configurations of one method are two rows. Rows carry the configuration and the method name.
* Several files of one configuration in one benchmark, typically different seeds, are pooled:
  n = all their episodes, mean and sample standard deviation (ddof=1) over the pooled
  per-episode accuracies, 95% CI = 1.96 * std / sqrt(n). Each file's own mean is kept as a
  per-seed mean.
* Within a benchmark, :func:`rank` applies the tie rule of DESIGN.md; across benchmarks, a
  configuration's *average rank* is the mean of its ranks over the benchmarks it appears in (the
  count is reported beside it, since a row present in fewer benchmarks is averaged over fewer).

Only ``kind == "fewshot"`` results are ranked; other kinds (``"continual"``) pass through
:func:`load_accepted` and are left to the page builder.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protobench.leaderboard.identity import configuration_of
from protobench.leaderboard.validate import validate_file

Z95 = 1.96
TIE_RULE = ("two methods tie when their mean accuracies differ by less than 1.96 * sqrt(s1^2/n1 + s2^2/n2) "
            "(s: sample std over episodes, n: episodes); methods sorted by mean form groups of consecutive "
            "methods that each tie with the group's best, and a group shares the average of the positions "
            "it spans")


def load_accepted(folder: str | Path) -> list[dict]:
    """Every valid ``*.json`` result in ``folder`` (not recursive), in file-name order.

    Each file is checked with :func:`protobench.leaderboard.validate.validate_file`; an invalid one is skipped
    with a ``UserWarning`` naming the file and its first problem. Each returned dict is the parsed
    file with one extra key, ``"_path"`` (the file's path as a string), for provenance.
    """
    accepted = []
    for path in sorted(Path(folder).glob("*.json")):
        problems = validate_file(path)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            warnings.warn(f"{path.name}: skipped, not a valid result: {problems[0]}{more}", stacklevel=2)
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        result["_path"] = str(path)
        accepted.append(result)
    return accepted


@dataclass
class MethodStats:
    """One method configuration's pooled evidence on one benchmark.

    ``configuration`` is the row's identity (:func:`configuration_of`); ``method`` is the
    registry name (``method.name``) it configures. ``std`` is the sample standard deviation
    (ddof=1) over all ``n`` pooled episodes; ``seed_means`` holds each pooled file's own mean,
    with ``seeds`` its ``seeds`` objects.
    """

    configuration: str
    method: str
    mean: float
    std: float
    n: int
    seed_means: list[float] = field(default_factory=list)
    seeds: list[dict] = field(default_factory=list)
    pretraining: str | None = None

    @property
    def ci95(self) -> float:
        """95% CI half-width of the pooled mean: 1.96 * std / sqrt(n)."""
        return Z95 * self.std / math.sqrt(self.n)

    @classmethod
    def pooled(cls, configuration: str, results: Sequence[dict]) -> MethodStats:
        """Pool the per-episode accuracies of ``results``: valid files of ``configuration`` on one benchmark.

        Files that share a configuration (a label) but not ``method.name``, or not
        ``method.params_hash`` (among the files that record one: 1.2.0 and later), are pooled all
        the same, with a ``UserWarning``: the label is the identity the submitters chose.
        ``method`` then joins the distinct names with ``"; "``, as ``pretraining`` does.
        """
        arrays = [np.asarray(r["evidence"]["per_episode_accuracy"], dtype=np.float64) for r in results]
        values = np.concatenate(arrays)
        names = sorted({r["method"]["name"] for r in results})
        if len(names) > 1:
            warnings.warn(f"{configuration}: pooled files name different methods {names}", stacklevel=2)
        if len({r["method"]["params_hash"] for r in results if "params_hash" in r["method"]}) > 1:
            warnings.warn(f"{configuration}: pooled files disagree on method.params_hash", stacklevel=2)
        pretrainings = sorted({r["method"].get("pretraining") for r in results} - {None})
        if len(pretrainings) > 1 or (pretrainings and any(r["method"].get("pretraining") is None for r in results)):
            warnings.warn(f"{configuration}: pooled files disagree on method.pretraining ({pretrainings} and "
                          "null); marked as pretrained", stacklevel=2)
        return cls(configuration=configuration, method="; ".join(names), mean=float(values.mean()),
                   std=float(values.std(ddof=1)), n=int(values.size), seed_means=[float(a.mean()) for a in arrays],
                   seeds=[dict(r["seeds"]) for r in results], pretraining="; ".join(pretrainings) or None)


def ties(a: MethodStats, b: MethodStats) -> bool:
    """True when ``|a.mean - b.mean| < 1.96 * sqrt(a.std^2/a.n + b.std^2/b.n)``."""
    return abs(a.mean - b.mean) < Z95 * math.sqrt(a.std**2 / a.n + b.std**2 / b.n)


def rank(entries: Iterable[MethodStats]) -> list[dict]:
    """Rank one benchmark's rows (method configurations) by the Meta-Dataset rule; best first.

    Exact rule: sort by mean accuracy, descending (equal means by configuration). The first entry
    not yet placed leads a new group; the following methods join it, in order, as long as each
    ties with the *leader* (:func:`ties`); the first one that does not tie with the leader ends the
    group and leads the next. A group spanning 1-based positions p..q gives each member the rank
    (p + q) / 2. Ties are therefore judged against each group's best method, never chained
    (A ties B and B ties C does not put C with A), and ranks never decrease as the mean falls.

    Returns one dict per entry: ``configuration``, ``method``, ``mean``, ``ci95``, ``n``, ``rank``
    (a float, e.g. 1.5), plus ``std``, ``seed_means``, ``seeds`` and ``pretraining`` from the entry.
    """
    ordered = sorted(entries, key=lambda e: (-e.mean, e.configuration))
    rows: list[dict] = []
    start = 0
    while start < len(ordered):
        leader, end = ordered[start], start + 1
        while end < len(ordered) and ties(leader, ordered[end]):
            end += 1
        shared = (start + 1 + end) / 2  # average of the positions start+1 .. end
        rows.extend({"configuration": e.configuration, "method": e.method, "mean": e.mean, "ci95": e.ci95,
                     "n": e.n, "rank": shared, "std": e.std, "seed_means": e.seed_means, "seeds": e.seeds,
                     "pretraining": e.pretraining}
                    for e in ordered[start:end])
        start = end
    return rows


@dataclass
class BenchmarkTable:
    """One benchmark's ranked rows (see :func:`rank`), each with ``average_rank`` added."""

    name: str
    protocol: str
    episode_spec: dict
    rows: list[dict]

    @property
    def label(self) -> str:
        """``"<name> <protocol>"``, the benchmark's display name and key."""
        return f"{self.name} {self.protocol}"


@dataclass
class Leaderboard:
    """Per-benchmark tables and the overall table.

    ``overall`` rows, one per configuration: ``configuration``, ``method``, ``average_rank`` (mean
    of its ranks over the benchmarks it appears in), ``n_benchmarks`` (how many), ``ranks``
    ({benchmark label: rank}) and ``pretraining``; sorted by average rank, then more benchmarks
    first, then configuration.
    """

    tables: list[BenchmarkTable]
    overall: list[dict]
    n_benchmarks: int


def leaderboard_table(results: Iterable[dict]) -> Leaderboard:
    """Group the few-shot results by benchmark, pool each configuration's files, rank, and average ranks.

    Rows are keyed by :func:`configuration_of` (never by ``method.name`` alone): files of one
    configuration pool, two configurations of one method stay two rows, in every table and in the
    average rank. Results of any other ``kind`` are ignored, and so (with a warning) is a second file with an
    already-seen ``run.id``, so that a copied file is not pooled twice. Benchmarks are ordered by
    (name, protocol). Every row of every table also gets its configuration's ``average_rank`` and
    ``n_benchmarks``.
    """
    grouped: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    specs: dict[tuple[str, str], dict] = {}
    seen_runs: set[str] = set()
    for result in results:
        if result.get("kind") != "fewshot":
            continue
        if result["run"]["id"] in seen_runs:
            warnings.warn(f"{result.get('_path', result['run']['id'])}: run id {result['run']['id']} seen before; "
                          "not pooled twice", stacklevel=2)
            continue
        seen_runs.add(result["run"]["id"])
        key = (result["benchmark"]["name"], result["benchmark"]["protocol"])
        grouped[key][configuration_of(result)].append(result)
        specs.setdefault(key, result["benchmark"]["episode_spec"])
    tables = [BenchmarkTable(name=name, protocol=protocol, episode_spec=specs[(name, protocol)],
                             rows=rank(MethodStats.pooled(configuration, files)
                                       for configuration, files in grouped[(name, protocol)].items()))
              for name, protocol in sorted(grouped)]

    ranks: dict[str, dict[str, float]] = defaultdict(dict)
    pretraining: dict[str, str | None] = {}
    methods: dict[str, set[str]] = defaultdict(set)
    for table in tables:
        for row in table.rows:
            configuration = row["configuration"]
            ranks[configuration][table.label] = row["rank"]
            pretraining[configuration] = pretraining.get(configuration) or row["pretraining"]
            methods[configuration].update(row["method"].split("; "))
    overall = sorted(({"configuration": configuration, "method": "; ".join(sorted(methods[configuration])),
                       "average_rank": sum(r.values()) / len(r), "n_benchmarks": len(r), "ranks": r,
                       "pretraining": pretraining[configuration]} for configuration, r in ranks.items()),
                     key=lambda row: (row["average_rank"], -row["n_benchmarks"], row["configuration"]))
    by_configuration = {row["configuration"]: row for row in overall}
    for table in tables:
        for row in table.rows:
            row["average_rank"] = by_configuration[row["configuration"]]["average_rank"]
            row["n_benchmarks"] = by_configuration[row["configuration"]]["n_benchmarks"]
    return Leaderboard(tables=tables, overall=overall, n_benchmarks=len(tables))


def format_rank(value: float) -> str:
    """``1.0`` -> ``"1"``, ``2.5`` -> ``"2.5"``, ``1.3333`` -> ``"1.33"``."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def pretraining_notes(board: Leaderboard) -> dict[str, int]:
    """Footnote number (from 1) for each distinct non-null pretraining, in order of first appearance."""
    notes: dict[str, int] = {}
    for row in board.overall:
        if row["pretraining"] and row["pretraining"] not in notes:
            notes[row["pretraining"]] = len(notes) + 1
    return notes


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell (one line, no bare pipes)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(board: Leaderboard) -> str:
    """The leaderboard as Markdown for the README.

    One table per benchmark (configuration, method name, accuracy % as mean +- 95% CI, episodes,
    rank), then the overall average-rank table (configuration, method name, average rank,
    benchmarks). A configuration whose ``method.pretraining`` is not null carries a footnote
    ``[^pN]`` reading "pretrained on <data>; not comparable ...". With no few-shot results it
    still returns the heading and a line saying so.
    """
    notes = pretraining_notes(board)

    def identity_cells(row: dict) -> str:
        """The configuration cell (with its footnote mark) and the method cell."""
        pre = row["pretraining"]
        return _cell(row["configuration"]) + (f" [^p{notes[pre]}]" if pre else "") + f" | {_cell(row['method'])}"

    lines = ["## Leaderboard", "", f"Ranking rule: {TIE_RULE}.", ""]
    if not board.tables:
        return "\n".join([*lines, "No accepted few-shot results yet.", ""])
    for table in board.tables:
        lines += [f"### {_cell(table.name)}: {_cell(table.protocol)}", "",
                  "| configuration | method | accuracy (%) | episodes | rank |", "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {identity_cells(r)} | {100 * r['mean']:.2f} ± {100 * r['ci95']:.2f} "
                  f"| {r['n']} | {format_rank(r['rank'])} |" for r in table.rows]
        lines.append("")
    lines += ["### Average rank", "",
              f"Average rank = mean of a configuration's ranks over the benchmarks it appears in "
              f"(out of {board.n_benchmarks}); lower is better.", "",
              "| configuration | method | average rank | benchmarks |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {identity_cells(r)} | {r['average_rank']:.2f} | {r['n_benchmarks']} |"
              for r in board.overall]
    lines.append("")
    for pre, number in notes.items():
        lines.append(f"[^p{number}]: pretrained on {_cell(pre)}; not comparable with methods trained only on "
                     "the benchmark's training classes.")
    if notes:
        lines.append("")
    return "\n".join(lines)
