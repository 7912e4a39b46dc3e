"""The static leaderboard page: one self-contained HTML file (tables, plots) plus the Markdown table.

``build_site(results_folder, out_dir)`` writes ``out_dir/index.html`` and ``out_dir/leaderboard.md``;
``build_site_report`` does the same and also returns what was skipped, for the CLI to print.
The HTML needs no server and no network: CSS is inline, plots are PNGs rendered with matplotlib's
Agg backend and inlined as ``data:`` URIs, there is no script, and a Content-Security-Policy
forbids loading anything else. Contents:

* the overall average-rank table (``<table class="overall">``), one row per method configuration,
  sorted by the number of benchmarks it is ranked on (more first), then by average rank;
* per few-shot benchmark, in numeric order of way, shot and query, a
  ``<table class="benchmark" data-benchmark="<name> <protocol>">`` whose body rows are
  ``<tr data-configuration="..." data-method="..." data-rank="...">``, and a point chart of mean
  accuracy with 95% CI error bars;
* per (benchmark name, n_way), accuracy against n_shot, one line per configuration (fixed episode
  specs);
* per continual result, a heatmap of its accuracy matrix R[i][j] (a note when there are none);
* when anything was left out, a ``<section id="skipped">`` with one line per file or chart and why.

A row is a method configuration (:func:`protobench.leaderboard.identity.configuration_of`), shown
in a ``configuration`` column beside a ``method`` column holding the registry name; charts label
rows by configuration.

The files come from strangers, so no text from them is live: every one is HTML-escaped, in
attributes too, and charts draw it literally (no TeX, no mathtext: a ``$`` is a dollar sign). One
bad file never takes the page down: invalid or unrankable files are skipped by
:mod:`~protobench.leaderboard.ranking`, and each chart and each benchmark section is built on its
own, so that one that fails is left out with its reason, listed on the page.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import io
import re
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from protobench.fewshot.atomic import write_atomic
from protobench.leaderboard.continual_board import (
    HEADINGS,
    METRICS,
    ContinualTable,
    continual_markdown,
    continual_tables,
    percent_summary,
)
from protobench.leaderboard.identity import configuration_of
from protobench.leaderboard.ranking import (
    TIE_RULE,
    BenchmarkTable,
    Leaderboard,
    Skipped,
    average_rank_note,
    display_text,
    format_rank,
    leaderboard_table,
    markdown,
    pretraining_notes,
    scan_accepted,
    setting_numbers,
)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24;
       max-width: 1100px; margin: 0 auto; padding: 1.5rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; }
.meta, .note, figcaption { color: #57606a; font-size: .9rem; }
nav a { margin-right: .8rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #d8dee4; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(odd) { background: #f6f8fa; }
figure { margin: .5rem 0 1.5rem; } img { max-width: 100%; height: auto; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; } .grid figure { flex: 0 1 480px; }
sup { color: #9a6700; }
ul.skipped li { font-size: .9rem; overflow-wrap: anywhere; }
"""

LITERAL_TEXT = {"text.usetex": False, "text.parse_math": False, "axes.formatter.use_mathtext": False}
"""matplotlib settings under which every chart is drawn: text is drawn as written, never as TeX or mathtext."""
MIN_ACCURACY_SPAN = 10.0
"""Fewest percentage points an accuracy axis spans, so that one narrow error bar does not fill the chart."""
MAX_CHART_ROWS = 40
"""Most configurations in one benchmark's accuracy chart (the best ones; the table lists all)."""
MAX_PLOTTED_SIZE = 10**6
"""Largest n_way, n_shot or n_query plotted; a setting beyond it keeps its table but is left out of charts."""
MAX_HEATMAP_INCHES = 12.0
"""Largest side of a continual heatmap, whatever the number of experiences."""
MAX_LABEL_CHARS = 48
"""Longest configuration label in a chart (tick labels, legends); the tables show the whole text."""
MAX_TITLE_CHARS = 80
"""Longest chart title."""

Drawn = TypeVar("Drawn")


def _literal_text(function: Callable) -> Callable:
    """Run ``function`` under :data:`LITERAL_TEXT`, so that the texts it creates and draws are literal."""

    @functools.wraps(function)
    def literal(*args, **kwargs):
        with matplotlib.rc_context(LITERAL_TEXT):
            return function(*args, **kwargs)

    return literal


@_literal_text
def _png(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (rendered by the Agg canvas)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _figure(uri: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def accuracy_limits(lows: Sequence[float], highs: Sequence[float],
                    min_span: float = MIN_ACCURACY_SPAN) -> tuple[float, float]:
    """Axis limits (accuracy, %) showing every interval [low, high] with a margin, within [0, 100].

    The span is at least ``min_span`` points (a single narrow error bar sits in the middle of a
    readable axis rather than filling it), and a margin of 5% of the data's span is added on each
    side. Limits beyond 0 or 100 are moved inside, keeping the span where the range allows.
    """
    low, high = min(lows), max(highs)
    pad = max(0.05 * (high - low), (min_span - (high - low)) / 2)
    low, high = low - pad, high + pad
    if low < 0:
        low, high = 0.0, min(100.0, high - low)
    if high > 100:
        low, high = max(0.0, low - (high - 100)), 100.0
    return low, high


@_literal_text
def accuracy_figure(table: BenchmarkTable) -> Figure:
    """Point chart of each configuration's mean accuracy (%) with its 95% CI as error bars, best on top.

    At most :data:`MAX_CHART_ROWS` configurations (the best ones) are drawn, each labelled with at
    most :data:`MAX_LABEL_CHARS` characters of its configuration.
    """
    rows = table.rows[:MAX_CHART_ROWS]
    fig = Figure(figsize=(6.4, 0.9 + 0.42 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    means, cis = np.array([100 * r["mean"] for r in rows]), np.array([100 * r["ci95"] for r in rows])
    ax.errorbar(means, y, xerr=cis, fmt="o", capsize=4, color="#0969da")
    ax.set_yticks(y, [f"{display_text(r['configuration'], MAX_LABEL_CHARS)} (rank {format_rank(r['rank'])})"
                      for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(*accuracy_limits(means - cis, means + cis))
    ax.set_xlabel("accuracy (%), mean ± 95% CI")
    ax.set_title(display_text(table.label, MAX_TITLE_CHARS), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def accuracy_chart(table: BenchmarkTable) -> str:
    """:func:`accuracy_figure` as a PNG ``data:`` URI."""
    return _png(accuracy_figure(table))


def _plottable(spec: dict) -> bool:
    """Whether a fixed spec's way, shot and query are integers a chart can place (1 .. MAX_PLOTTED_SIZE)."""
    kind, *sizes = setting_numbers(spec)
    return kind == 0 and all(1 <= size <= MAX_PLOTTED_SIZE for size in sizes)


def _short_int(value: int) -> str:
    """An integer as text, shortened when it has more than 12 digits (never converted to float)."""
    text = str(value)
    return text if len(text) <= 12 else f"{text[:6]}... ({len(text)} digits)"


def shots_groups(board: Leaderboard) -> tuple[dict[tuple[str, int], list[tuple[BenchmarkTable, dict]]],
                                              list[Skipped]]:
    """The rows of fixed-spec benchmarks grouped by (benchmark name, n_way), in numeric order.

    Benchmarks with a variable spec are not plotted against shots; a fixed spec whose sizes are
    beyond :data:`MAX_PLOTTED_SIZE` is left out with a :class:`Skipped` reason.
    """
    groups: dict[tuple[str, int], list[tuple[BenchmarkTable, dict]]] = defaultdict(list)
    skipped = []
    for table in board.tables:
        spec = table.episode_spec
        if setting_numbers(spec)[0] != 0:
            continue
        if not _plottable(spec):
            sizes = ", ".join(f"{key} {_short_int(spec[key])}" for key in ("n_way", "n_shot", "n_query"))
            skipped.append(Skipped(f"accuracy-vs-shots point of {table.label}",
                                   f"{sizes}: outside 1..{MAX_PLOTTED_SIZE}, not plotted"))
            continue
        groups[(table.name, spec["n_way"])].extend((table, row) for row in table.rows)
    return dict(sorted(groups.items())), skipped


@_literal_text
def shots_figure(name: str, n_way: int, items: list[tuple[BenchmarkTable, dict]]) -> Figure:
    """Accuracy against n_shot for one (benchmark name, n_way), one line per configuration.

    When the group mixes query sizes, lines are split by n_query too and labelled
    ``configuration (q=N)``.
    """
    mixed_query = len({t.episode_spec["n_query"] for t, _ in items}) > 1
    lines: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for table, row in items:
        label = display_text(row["configuration"], MAX_LABEL_CHARS)
        label += f" (q={table.episode_spec['n_query']})" if mixed_query else ""
        lines[label].append((table.episode_spec["n_shot"], 100 * row["mean"], 100 * row["ci95"]))
    shots = sorted({t.episode_spec["n_shot"] for t, _ in items})
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for label, points in sorted(lines.items()):
        x, mean, ci = zip(*sorted(points), strict=True)
        ax.errorbar(x, mean, yerr=ci, marker="o", capsize=3, label=label)
    values = [(m - c, m + c) for points in lines.values() for _, m, c in points]
    ax.set_ylim(*accuracy_limits([low for low, _ in values], [high for _, high in values]))
    ax.set_xticks(shots)
    ax.set_xlabel("shots per class (n_shot)")
    ax.set_ylabel("accuracy (%), mean ± 95% CI")
    ax.set_title(display_text(f"{name}, {n_way}-way", MAX_TITLE_CHARS), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def shots_charts(board: Leaderboard) -> list[tuple[str, str]]:
    """(title, PNG URI) per (benchmark name, n_way) of :func:`shots_groups`: accuracy against n_shot."""
    groups, _ = shots_groups(board)
    return [(f"{name}, {n_way}-way", _png(shots_figure(name, n_way, items))) for (name, n_way), items in groups.items()]


@_literal_text
def continual_figure(result: dict) -> tuple[str, Figure] | None:
    """(title, figure) of a continual result's accuracy matrix, or None if it has no square matrix of numbers."""
    figure = matrix_figure(_continual_title(result), result.get("evidence", {}).get("accuracy_matrix"))
    return None if figure is None else (_continual_title(result), figure)


@_literal_text
def matrix_figure(title: str, matrix: object) -> Figure | None:
    """A heatmap of an accuracy matrix (fractions, shown in percent) titled ``title``; None if ``matrix``
    is not a non-empty square matrix of numbers."""
    try:
        values = 100 * np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] == 0:
        return None
    size = values.shape[0]
    fig = Figure(figsize=(min(MAX_HEATMAP_INCHES, 1.6 + 0.45 * size), min(MAX_HEATMAP_INCHES, 1.2 + 0.45 * size)))
    ax = fig.add_subplot()
    image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis")
    fig.colorbar(image, ax=ax, label="accuracy (%)", shrink=0.8)
    if size <= 12:
        for i in range(size):
            for j in range(size):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 60 else "black")
    ticks = range(size) if size <= 20 else range(0, size, max(1, size // 10))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    ax.set_xlabel("evaluated on experience j")
    ax.set_ylabel("after training experience i")
    ax.set_title(display_text(title, MAX_TITLE_CHARS), fontsize=9)
    return fig


def _continual_title(result: dict) -> str:
    """``"<configuration> on <benchmark> (<protocol>)"``, as :func:`display_text`."""
    method = configuration_of(result) if "name" in result.get("method", {}) else "?"
    benchmark = result.get("benchmark", {})
    title = f"{display_text(method)} on {display_text(benchmark.get('name', '?'))}"
    if benchmark.get("protocol"):
        title += f" ({display_text(benchmark['protocol'])})"
    return title


def continual_heatmap(result: dict) -> tuple[str, str] | None:
    """(title, PNG URI) of a continual result's accuracy matrix, or None if it has no square matrix."""
    drawn = continual_figure(result)
    return None if drawn is None else (drawn[0], _png(drawn[1]))


def _as_percent(value: object) -> float | None:
    """``100 * value`` for a finite number (an int too large for a float is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        percent = 100 * float(value)
    except OverflowError:
        return None
    return percent if np.isfinite(percent) else None


def _continual_caption(result: dict) -> str:
    """``": average accuracy 71.2%, forgetting 9.3%"`` from whichever of those metrics are finite numbers."""
    metrics = result.get("metrics", {})
    shown = []
    for key, label in (("average_accuracy", "average accuracy"), ("forgetting", "forgetting"), ("bwt", "BWT")):
        value = metrics.get(key, {}).get("value") if isinstance(metrics.get(key), dict) else None
        if (percent := _as_percent(value)) is not None:
            shown.append(f"{label} {percent:.1f}%")
    return (": " + ", ".join(shown)) if shown else ""


def _identity_html(row: dict, notes: dict[str, int]) -> tuple[str, str]:
    """The row's ``data-*`` identity attributes, and its configuration and method cells (all escaped)."""
    configuration, method = html.escape(row["configuration"]), html.escape(row["method"])
    mark = f"<sup>{notes[row['pretraining']]}</sup>" if row["pretraining"] else ""
    return (f'data-configuration="{configuration}" data-method="{method}"',
            f'<td class="configuration">{configuration}{mark}</td><td class="method">{method}</td>')


def _rows_html(table: BenchmarkTable, notes: dict[str, int]) -> str:
    out = []
    for r in table.rows:
        attributes, cells = _identity_html(r, notes)
        seeds = ", ".join(f"{100 * m:.2f}" for m in sorted(r["seed_means"], reverse=True))
        out.append(f'<tr {attributes} data-rank="{format_rank(r["rank"])}">'
                   f'<td class="num rank">{format_rank(r["rank"])}</td>{cells}'
                   f'<td class="num accuracy">{100 * r["mean"]:.2f} ± {100 * r["ci95"]:.2f}</td>'
                   f'<td class="num episodes">{r["n"]}</td>'
                   f'<td class="num seeds">{seeds}</td>'
                   f'<td class="num average-rank">{r["average_rank"]:.2f}</td></tr>')
    return "\n".join(out)


def _chart(what: str, name: str, draw: Callable[[], Drawn], problems: list[Skipped]) -> tuple[Drawn | None, str]:
    """``(uri, "")`` from ``draw()``, or ``(None, note)`` when drawing fails.

    A failure is added to ``problems`` as ``Skipped(name, reason)`` and the note says so in place
    of the chart: one chart that cannot be drawn never stops the page, and is never hidden.
    """
    try:
        return draw(), ""
    except Exception as error:  # matplotlib raises many kinds; the page goes on without this chart
        skipped = Skipped(display_text(name), display_text(f"not drawn: {type(error).__name__}: {error}"))
        problems.append(skipped)
        return None, f'<p class="note not-drawn">{html.escape(what)}: {html.escape(skipped.reason)}</p>'


def _benchmark_html(table: BenchmarkTable, notes: dict[str, int], problems: list[Skipped]) -> str:
    """One few-shot benchmark's section: its table and its accuracy chart (or a note that it is not drawn)."""
    label = html.escape(table.label)
    uri, note = _chart("accuracy chart", f"accuracy chart of {table.label}", lambda: accuracy_chart(table), problems)
    shown = "" if len(table.rows) <= MAX_CHART_ROWS else f" The {MAX_CHART_ROWS} best configurations are drawn."
    chart = note or _figure(uri, f"accuracy with 95% CI, {table.label}",
                            "Mean accuracy over all pooled episodes; bars: 95% CI = 1.96 · std / √n." + shown)
    return "\n".join([
        f'<section class="benchmark-section" id="b-{_slug(table.label)}"><h3>{label}</h3>',
        f'<table class="benchmark" data-benchmark="{label}"><thead><tr><th class="num">rank</th>'
        '<th>configuration</th><th>method</th><th class="num">accuracy (%)</th><th class="num">episodes</th>'
        '<th class="num">per-file (seed) means (%)</th><th class="num">average rank</th></tr></thead><tbody>',
        _rows_html(table, notes), "</tbody></table>", chart, "</section>"])


def _continual_html(table: ContinualTable, problems: list[Skipped]) -> str:
    """One continual benchmark: its ranked rows (metrics as mean +- std over seeds) and, per row, the
    heatmap of its accuracy matrix averaged over seeds."""
    label = html.escape(table.label)
    heads = "".join(f'<th class="num">{html.escape(HEADINGS[m])}</th>' for m in METRICS)
    rows, heatmaps = [], []
    for row in table.rows:
        cells = "".join(f'<td class="num">{html.escape(percent_summary(row["metrics"][m]))}</td>' for m in METRICS)
        rows.append(f'<tr><td class="num">{row["rank"]:g}</td><td>{html.escape(row["configuration"])}</td>'
                    f'<td>{html.escape(row["method"])}</td>{cells}<td class="num">{row["n_seeds"]}</td></tr>')
        title = f"{row['configuration']} on {table.label}, mean of {row['n_seeds']} seed(s)"
        uri, note = _chart("heatmap", f"heatmap of {title}",
                           lambda title=title, row=row: _png(matrix_figure(title, row["mean_matrix"])), problems)
        heatmaps.append(note or _figure(uri, f"accuracy matrix, {title}", title))
    ranked_on = "task-aware final average accuracy" if table.ranked_on != "average_accuracy" else \
        "final average accuracy"
    return "".join([
        f'<section class="continual" id="{_slug(table.label)}"><h3>{label}</h3>',
        f'<p class="note">Mean ± std over seeds (percent); ranked by {ranked_on}. R[i][j] = accuracy on '
        "experience j's test set after training experience i.</p>",
        f'<table class="continual" data-benchmark="{label}"><thead><tr><th class="num">rank</th>'
        f'<th>configuration</th><th>method</th>{heads}<th class="num">seeds</th></tr></thead><tbody>',
        *rows, "</tbody></table>", '<div class="grid">', *heatmaps, "</div></section>"])


def render_html(results: list[dict], generated: dt.datetime | None = None, board: Leaderboard | None = None,
                skipped: Sequence[Skipped] = ()) -> str:
    """The page for already-accepted ``results`` (few-shot and continual), as one HTML string.

    ``board`` is ``leaderboard_table(results)``, computed here when not given; ``generated``
    (default: now, UTC) is the time printed on the page; ``skipped`` lists files already refused
    (by :func:`protobench.leaderboard.ranking.scan_accepted`), shown with the board's own skipped
    files and the charts that could not be drawn. See :func:`render_page`.
    """
    return render_page(results, generated, board, skipped)[0]


def render_page(results: list[dict], generated: dt.datetime | None = None, board: Leaderboard | None = None,
                skipped: Sequence[Skipped] = ()) -> tuple[str, list[Skipped]]:
    """As :func:`render_html`, and everything left out: ``skipped``, ``board.skipped``, then charts not drawn.

    Each benchmark section, chart and continual heatmap is built on its own; one that fails is
    replaced by a note and listed (see :func:`_chart`), and the page lists everything left out in
    a ``<section id="skipped">``.
    """
    generated = generated or dt.datetime.now(dt.UTC).replace(microsecond=0)
    board = board if board is not None else leaderboard_table(results)
    problems: list[Skipped] = [*skipped, *board.skipped]
    notes = pretraining_notes(board)
    continual = [r for r in results if r.get("kind") == "continual"]

    body = ['<section id="overall"><h2>Average rank</h2>',
            f'<p class="note">{html.escape(average_rank_note(board.n_benchmarks))}</p>']
    if board.overall:
        body.append('<table class="overall"><thead><tr><th>configuration</th><th>method</th>'
                    '<th class="num">benchmarks</th><th class="num">average rank</th></tr></thead><tbody>')
        for r in board.overall:
            attributes, cells = _identity_html(r, notes)
            body.append(f'<tr {attributes}>{cells}<td class="num">{r["n_benchmarks"]}</td>'
                        f'<td class="num">{r["average_rank"]:.2f}</td></tr>')
        body.append("</tbody></table>")
    else:
        body.append('<p class="empty">No accepted few-shot results yet.</p>')
    body.append("</section>")

    body.append('<section id="fewshot"><h2>Few-shot benchmarks</h2>')
    for table in board.tables:
        try:
            body.append(_benchmark_html(table, notes, problems))
        except Exception as error:  # a section that cannot be written is listed, not fatal
            problems.append(Skipped(display_text(f"section {table.label}"),
                                    display_text(f"not written: {type(error).__name__}: {error}")))
    body.append("</section>")

    body.append('<section id="shots"><h2>Accuracy against shots</h2>')
    groups, unplotted = shots_groups(board)
    problems += unplotted
    figures = []
    for (name, n_way), items in groups.items():
        title = f"{name}, {n_way}-way"
        uri, note = _chart("chart", f"accuracy-vs-shots chart {title}",
                           lambda name=name, n_way=n_way, items=items: _png(shots_figure(name, n_way, items)),
                           problems)
        figures.append(note or _figure(uri, f"accuracy against shots, {title}", title))
    if figures:
        body += ['<div class="grid">', *figures, "</div>"]
    else:
        body.append('<p class="empty">No fixed-way few-shot results yet.</p>')
    body.append("</section>")

    body.append('<section id="continual"><h2>Continual learning</h2>')
    tables, left_out = continual_tables(continual)
    problems += left_out
    for table in tables:
        try:
            body.append(_continual_html(table, problems))
        except Exception as error:  # a section that cannot be written is listed, not fatal
            problems.append(Skipped(display_text(f"section {table.label}"),
                                    display_text(f"not written: {type(error).__name__}: {error}")))
    if not tables:
        body.append('<p class="empty">No continual results yet.</p>')
    body.append("</section>")

    if notes:
        body.append('<section id="notes"><h2>Notes</h2><ol class="notes">')
        body += [f"<li>pretrained on {html.escape(pre)}; not comparable with methods trained only on the "
                 "benchmark's training classes.</li>" for pre in notes]
        body.append("</ol></section>")
    if problems:
        body += ['<section id="skipped"><h2>Skipped</h2>',
                 '<p class="note">Result files that are not on the leaderboard and charts that could not be drawn, '
                 "with the reason.</p>", '<ul class="skipped">',
                 *(f'<li><code>{html.escape(p.name)}</code>: {html.escape(p.reason)}</li>' for p in problems),
                 "</ul></section>"]

    stamp = generated.isoformat()
    skipped_note = (f' <a href="#skipped">{len(problems)} skipped</a> (listed at the end).' if problems else "")
    head = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>protobench leaderboard</title><style>{CSS}</style></head><body>",
        "<header><h1>protobench leaderboard</h1>",
        f'<p class="meta">Generated <time datetime="{stamp}">{stamp}</time> from {len(results)} valid '
        f"result file{'s' if len(results) != 1 else ''} ({len(board.tables)} few-shot benchmarks, "
        f"{len(continual)} continual results).{skipped_note}</p>",
        f'<p class="rule">Ranking: {html.escape(TIE_RULE)}.</p>',
        '<nav><a href="#overall">average rank</a><a href="#fewshot">few-shot benchmarks</a>'
        '<a href="#shots">accuracy vs shots</a><a href="#continual">continual</a>'
        + ('<a href="#skipped">skipped</a>' if problems else "") + "</nav></header>",
    ]
    return "\n".join([*head, *body, "</body></html>\n"]), problems


@dataclass
class Site:
    """What :func:`build_site_report` wrote, from how many valid files, and everything it left out."""

    index: Path
    markdown: Path
    n_results: int
    skipped: list[Skipped]


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`protobench.fewshot.atomic.write_atomic`)."""
    write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def build_site_report(results_folder: str | Path, out_dir: str | Path, generated: dt.datetime | None = None) -> Site:
    """Write ``out_dir/index.html`` and ``out_dir/leaderboard.md`` from the valid files in ``results_folder``.

    Never fails because of one file: invalid files (:func:`protobench.leaderboard.ranking.scan_accepted`),
    files the ranking leaves out (too few episodes, a repeated run id, ...) and charts that cannot
    be drawn are all left out, listed on the page and returned in ``Site.skipped``.
    ``generated`` (default: now, UTC) is the time printed on the page.
    """
    results, skipped = scan_accepted(results_folder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    board = leaderboard_table(results)
    page, problems = render_page(results, generated, board, skipped)
    continual, _ = continual_tables(r for r in results if r.get("kind") == "continual")
    _write_text(out / "leaderboard.md", markdown(board) + ("\n" + continual_markdown(continual) if continual else ""))
    _write_text(out / "index.html", page)
    return Site(index=out / "index.html", markdown=out / "leaderboard.md", n_results=len(results), skipped=problems)


def build_site(results_folder: str | Path, out_dir: str | Path, generated: dt.datetime | None = None) -> Path:
    """:func:`build_site_report`, with a ``UserWarning`` ``"<name>: skipped, <reason>"`` per thing left out.

    Returns the index.html path.
    """
    site = build_site_report(results_folder, out_dir, generated)
    for item in site.skipped:
        warnings.warn(f"{item.name}: skipped, {item.reason}", stacklevel=2)
    return site.index
