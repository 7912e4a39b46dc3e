"""Rank method configurations on the accepted few-shot result files (the Meta-Dataset rule).

Data flow: ``scan_accepted(folder)`` (or ``load_accepted``, which warns instead of returning what it
skipped) -> ``leaderboard_table(results)`` -> ``markdown(board)``.

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
  The overall table is sorted by that count first (more benchmarks first), then by average rank.
* Only few-shot files with at least :data:`MIN_EPISODES` test episodes are ranked (DESIGN.md).

Only ``kind == "fewshot"`` results are ranked; other kinds (``"continual"``) pass through
:func:`load_accepted` and are left to the page builder.

The files come from strangers. One bad file never stops the leaderboard: a file that cannot be
read, is invalid, has too few episodes or cannot be ranked is left out with a one-line reason
(:class:`Skipped`), and every text shown from a file goes through :func:`display_text`.
"""

from __future__ import annotations

import json
import math
import re
import stat
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protobench.leaderboard.identity import configuration_of
from protobench.leaderboard.validate import validate_file

Z95 = 1.96
MIN_EPISODES = 600
"""Fewest test episodes a few-shot file needs to be ranked (DESIGN.md: n >= 600 for the leaderboard)."""
MAX_TEXT_CHARS = 256
"""Longest text taken from a result file for display (the schema bounds ``method.pretraining`` at 256)."""
TIE_RULE = ("two methods tie when their mean accuracies differ by less than 1.96 * sqrt(s1^2/n1 + s2^2/n2) "
            "(s: sample std over episodes, n: episodes); methods sorted by mean form groups of consecutive "
            "methods that each tie with the group's best, and a group shares the average of the positions "
            "it spans")


@dataclass(frozen=True)
class Skipped:
    """Something left out of the leaderboard (a result file, a chart), and why, in one line.

    ``str()`` gives ``"skipped <name>: <reason>"``, the line the CLI prints and the page lists.
    """

    name: str
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.name}: {self.reason}"


_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown_char(char: str) -> str:
    """``char`` as :func:`display_text` shows it: whitespace as a space, unshowable characters as U+FFFD."""
    if char.isspace():
        return " "
    if unicodedata.category(char) in ("Cs", "Cc") or char in _BIDI_CONTROLS:
        return "\ufffd"
    return char


def display_text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """``str(value)`` made safe to write and show: one line, valid Unicode, at most ``limit`` characters.

    Whitespace (newlines included) becomes a space; lone surrogates (which UTF-8 cannot encode),
    other control characters and bidirectional controls each become U+FFFD; a longer text is cut
    and ends with an ellipsis. Escaping for HTML or Markdown is left to the writer of each format.
    """
    text = "".join(map(_shown_char, str(value)[: limit + 1]))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def source_name(result: dict) -> str:
    """How a result is named in a :class:`Skipped` line: its file name, else ``run <run.id>``."""
    if "_path" in result:
        return display_text(Path(str(result["_path"])).name)
    run = result.get("run")
    return display_text(f"run {run.get('id', '?') if isinstance(run, dict) else '?'}")


def scan_accepted(folder: str | Path) -> tuple[list[dict], list[Skipped]]:
    """The valid ``*.json`` results in ``folder`` (not recursive, file-name order) and the files skipped.

    Only regular files are read (a symbolic link, folder, FIFO or device is skipped unread). Each
    file is checked with :func:`protobench.leaderboard.validate.validate_file`; an invalid one is
    skipped with its first problem (and how many more), and so is one whose check fails
    unexpectedly, so that no single file stops the leaderboard. Each returned dict is the parsed
    file with one extra key, ``"_path"`` (the file's path as a string), for provenance.
    """
    accepted, skipped = [], []
    for path in sorted(Path(folder).glob("*.json")):
        name = display_text(path.name)
        try:
            if not stat.S_ISREG(path.lstat().st_mode):  # a FIFO would block the reader, a link points elsewhere
                skipped.append(Skipped(name, "not a regular file (a link, folder, FIFO or device); not read"))
                continue
            problems = validate_file(path)
            if not problems:
                result = json.loads(path.read_text(encoding="utf-8"))
        except Exception as error:  # a bug in the validator or reader must not stop the page either
            skipped.append(Skipped(name, display_text(f"could not be checked: {type(error).__name__}: {error}")))
            continue
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            skipped.append(Skipped(name, display_text(f"not a valid result: {problems[0]}{more}", 2 * MAX_TEXT_CHARS)))
            continue
        result["_path"] = str(path)
        accepted.append(result)
    return accepted, skipped


def load_accepted(folder: str | Path) -> list[dict]:
    """Every valid ``*.json`` result in ``folder``, as :func:`scan_accepted` finds them.

    Each skipped file is reported with a ``UserWarning`` ``"<file>: skipped, <reason>"``.
    """
    accepted, skipped = scan_accepted(folder)
    for item in skipped:
        warnings.warn(f"{item.name}: skipped, {item.reason}", stacklevel=2)
    return accepted


def episode_problem(result: dict, min_episodes: int = MIN_EPISODES) -> str | None:
    """Why a valid result is too small to rank (a few-shot file with fewer than ``min_episodes`` episodes), or None.

    The count is the length of ``evidence.per_episode_accuracy``, the episodes that would be pooled.
    """
    if result.get("kind") != "fewshot":
        return None
    n = len(result["evidence"]["per_episode_accuracy"])
    if n >= min_episodes:
        return None
    return f"{n} test episodes; the leaderboard ranks few-shot results of at least {min_episodes} episodes"


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
        ``method`` then joins the distinct names with ``"; "``, as ``pretraining`` does (both as
        :func:`display_text`).
        """
        arrays = [np.asarray(r["evidence"]["per_episode_accuracy"], dtype=np.float64) for r in results]
        values = np.concatenate(arrays)
        names = sorted({display_text(r["method"]["name"]) for r in results})
        if len(names) > 1:
            warnings.warn(f"{configuration}: pooled files name different methods {names}", stacklevel=2)
        if len({r["method"]["params_hash"] for r in results if "params_hash" in r["method"]}) > 1:
            warnings.warn(f"{configuration}: pooled files disagree on method.params_hash", stacklevel=2)
        pretrainings = sorted({display_text(p) for r in results if (p := r["method"].get("pretraining")) is not None})
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

    @property
    def order(self) -> tuple:
        """Sort key: name, then fixed specs by (n_way, n_shot, n_query) as numbers, then the others; protocol last.

        So 5-way comes before 20-way and 1-shot before 5-shot, whatever the protocol text says.
        Integers are compared as integers, never converted to float, however large.
        """
        return (self.name, *setting_numbers(self.episode_spec), self.protocol)


def setting_numbers(spec: dict) -> tuple[int, int, int, int]:
    """``(0, n_way, n_shot, n_query)`` for a fixed episode spec with integer sizes, else ``(1, 0, 0, 0)``."""
    if not isinstance(spec, dict) or spec.get("kind") != "fixed":
        return (1, 0, 0, 0)
    sizes = [spec.get(key) for key in ("n_way", "n_shot", "n_query")]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
        return (0, *sizes)
    return (1, 0, 0, 0)


@dataclass
class Leaderboard:
    """Per-benchmark tables, the overall table, and what was left out.

    ``overall`` rows, one per configuration: ``configuration``, ``method``, ``average_rank`` (mean
    of its ranks over the benchmarks it appears in), ``n_benchmarks`` (how many), ``ranks``
    ({benchmark label: rank}) and ``pretraining``; sorted by ``n_benchmarks`` (more first), then
    average rank, then configuration, so that an average over few benchmarks never sorts above one
    over many. ``skipped`` lists the few-shot files that were not ranked, with the reason.
    """

    tables: list[BenchmarkTable]
    overall: list[dict]
    n_benchmarks: int
    skipped: list[Skipped] = field(default_factory=list)


def _spec_text(spec: object) -> str:
    """A canonical JSON text of an episode spec, to compare the specs of files of one benchmark."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _common_specs(grouped: dict[tuple[str, str], dict[str, list[dict]]],
                  skipped: list[Skipped]) -> dict[tuple[str, str], dict]:
    """The episode spec of each benchmark: the one most of its files hold; files holding another are removed.

    Files of one (name, protocol) are only comparable on the same kind of episodes: a file whose
    spec differs is removed from ``grouped`` and added to ``skipped`` rather than ranked against
    the others. Equal counts go to the spec whose canonical JSON sorts first.
    """
    specs = {}
    for (name, protocol), configurations in grouped.items():
        texts = {id(r): _spec_text(r["benchmark"]["episode_spec"]) for group in configurations.values() for r in group}
        counts = Counter(texts.values())
        common = min(counts, key=lambda text: (-counts[text], text))
        for configuration, group in list(configurations.items()):
            skipped.extend(Skipped(source_name(r), display_text(
                f"episode_spec {texts[id(r)]} differs from {common}, the spec of {counts[common]} other file(s) of "
                f"{name} {protocol}")) for r in group if texts[id(r)] != common)
            configurations[configuration] = [r for r in group if texts[id(r)] == common]
            if not configurations[configuration]:
                del configurations[configuration]
        specs[(name, protocol)] = next(iter(configurations.values()))[0]["benchmark"]["episode_spec"]
    return specs


def leaderboard_table(results: Iterable[dict], min_episodes: int = MIN_EPISODES) -> Leaderboard:
    """Group the few-shot results by benchmark, pool each configuration's files, rank, and average ranks.

    Rows are keyed by :func:`configuration_of` (never by ``method.name`` alone): files of one
    configuration pool, two configurations of one method stay two rows, in every table and in the
    average rank. Results of any other ``kind`` are ignored. A few-shot file is skipped, with its
    reason in ``Leaderboard.skipped``, when it has fewer than ``min_episodes`` test episodes, when
    its ``run.id`` was already seen (a copied file is not pooled twice), when its episode spec is
    not the one the other files of its benchmark hold, or when it cannot be ranked at all.
    Benchmarks are ordered by :attr:`BenchmarkTable.order` (numerically by way, shot and query).
    Every row of every table also gets its configuration's ``average_rank`` and ``n_benchmarks``.
    Names, protocols and configurations are taken as :func:`display_text`.
    """
    grouped: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    skipped: list[Skipped] = []
    seen_runs: dict[str, str] = {}
    for result in results:
        if result.get("kind") != "fewshot":
            continue
        try:  # a validated file has all of these; anything else is skipped, not fatal
            problem = episode_problem(result, min_episodes)
            run_id = display_text(result["run"]["id"])
            key = (display_text(result["benchmark"]["name"]), display_text(result["benchmark"]["protocol"]))
            configuration = display_text(configuration_of(result))
        except (LookupError, TypeError, ValueError) as error:
            skipped.append(Skipped(source_name(result), display_text(f"cannot be ranked: {type(error).__name__}: "
                                                                     f"{error}")))
            continue
        if problem is not None:
            skipped.append(Skipped(source_name(result), problem))
            continue
        if run_id in seen_runs:
            skipped.append(Skipped(source_name(result), f"run id {run_id} already ranked from {seen_runs[run_id]}; "
                                                        "not pooled twice"))
            continue
        seen_runs[run_id] = source_name(result)
        grouped[key][configuration].append(result)
    specs = _common_specs(grouped, skipped)

    tables = []
    for (name, protocol), configurations in grouped.items():
        entries = []
        for configuration, files in configurations.items():
            try:
                entries.append(MethodStats.pooled(configuration, files))
            except (ArithmeticError, LookupError, TypeError, ValueError) as error:
                skipped.extend(Skipped(source_name(r), display_text(f"cannot be pooled as {configuration}: "
                                                                    f"{type(error).__name__}: {error}"))
                               for r in files)
        if entries:
            tables.append(BenchmarkTable(name=name, protocol=protocol, episode_spec=specs[(name, protocol)],
                                         rows=rank(entries)))
    tables.sort(key=lambda table: table.order)

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
                     key=lambda row: (-row["n_benchmarks"], row["average_rank"], row["configuration"]))
    by_configuration = {row["configuration"]: row for row in overall}
    for table in tables:
        for row in table.rows:
            row["average_rank"] = by_configuration[row["configuration"]]["average_rank"]
            row["n_benchmarks"] = by_configuration[row["configuration"]]["n_benchmarks"]
    return Leaderboard(tables=tables, overall=overall, n_benchmarks=len(tables), skipped=skipped)


def average_rank_note(n_benchmarks: int) -> str:
    """The caption of the average-rank table: what the average is and why rows are sorted by the count first."""
    return (f"Average rank = mean of a configuration's ranks over the benchmarks it appears in (out of "
            f"{n_benchmarks}); lower is better. An average over a few benchmarks is not comparable with one over "
            "many, so rows are sorted by the number of benchmarks ranked on (more first), and only then by "
            "average rank.")


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


_MARKDOWN_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKDOWN_ESCAPED = frozenset("\\`*_~[]()!|$:#")


def markdown_cell(text: object) -> str:
    """Text shown literally by a Markdown renderer (GitHub's included), safe inside one table cell.

    One line (runs of whitespace, newlines included, become one space); ``&``, ``<`` and ``>`` as
    HTML entities, so that no raw HTML (``<script>``, ``<img onerror=...>``) reaches the page;
    a backslash before each of ``\\ ` * _ ~ [ ] ( ) ! | $ : #``, so that no link, image, code span,
    emphasis, math or footnote forms and no pipe ends the cell; and ``www.`` written ``www\\.``.
    Escaping ``:`` and ``www.`` keeps GitHub from turning a URL in a field into a live link.
    """
    out = []
    for char in " ".join(display_text(text).split()):
        out.append(_MARKDOWN_ENTITIES.get(char) or ("\\" + char if char in _MARKDOWN_ESCAPED else char))
    return re.sub(r"(?i)(www)\.", r"\1\\.", "".join(out))


def markdown(board: Leaderboard) -> str:
    """The leaderboard as Markdown for the README.

    One table per benchmark (configuration, method name, accuracy % as mean +- 95% CI, episodes,
    rank), then the overall average-rank table (configuration, method name, benchmarks ranked on,
    average rank; sorted by the count, then the average). A configuration whose
    ``method.pretraining`` is not null carries a footnote ``[^pN]`` reading "pretrained on <data>;
    not comparable ...". Every text from a result file is written with :func:`_cell`. With no
    few-shot results it still returns the heading and a line saying so.
    """
    notes = pretraining_notes(board)

    def identity_cells(row: dict) -> str:
        """The configuration cell (with its footnote mark) and the method cell."""
        pre = row["pretraining"]
        mark = f" [^p{notes[pre]}]" if pre else ""
        return markdown_cell(row["configuration"]) + mark + f" | {markdown_cell(row['method'])}"

    lines = ["## Leaderboard", "", f"Ranking rule: {TIE_RULE}.", ""]
    if not board.tables:
        return "\n".join([*lines, "No accepted few-shot results yet.", ""])
    for table in board.tables:
        lines += [f"### {markdown_cell(table.name)}: {markdown_cell(table.protocol)}", "",
                  "| configuration | method | accuracy (%) | episodes | rank |", "| --- | --- | ---: | ---: | ---: |"]
        lines += [f"| {identity_cells(r)} | {100 * r['mean']:.2f} ± {100 * r['ci95']:.2f} "
                  f"| {r['n']} | {format_rank(r['rank'])} |" for r in table.rows]
        lines.append("")
    lines += ["### Average rank", "", average_rank_note(board.n_benchmarks), "",
              "| configuration | method | benchmarks | average rank |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {identity_cells(r)} | {r['n_benchmarks']} | {r['average_rank']:.2f} |" for r in board.overall]
    lines.append("")
    for pre, number in notes.items():
        lines.append(f"[^p{number}]: pretrained on {markdown_cell(pre)}; not comparable with methods trained only on "
                     "the benchmark's training classes.")
    if notes:
        lines.append("")
    return "\n".join(lines)
