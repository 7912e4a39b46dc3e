"""The static leaderboard page: one self-contained HTML file (tables, plots) plus the Markdown table.

``build_site(results_folder, out_dir)`` writes ``out_dir/index.html`` and ``out_dir/leaderboard.md``.
The HTML needs no server and no network: CSS is inline, plots are PNGs rendered with matplotlib's
Agg backend and inlined as ``data:`` URIs, there is no script, and a Content-Security-Policy
forbids loading anything else. Contents:

* the overall average-rank table (``<table class="overall">``), one row per method configuration;
* per few-shot benchmark, a ``<table class="benchmark" data-benchmark="<name> <protocol>">`` whose
  body rows are ``<tr data-configuration="..." data-method="..." data-rank="...">``, and a point
  chart of mean accuracy with 95% CI error bars;
* per (benchmark name, n_way), accuracy against n_shot, one line per configuration (fixed episode
  specs);
* per continual result, a heatmap of its accuracy matrix R[i][j] (a note when there are none).

A row is a method configuration (:func:`protobench.leaderboard.identity.configuration_of`), shown
in a ``configuration`` column beside a ``method`` column holding the registry name; charts label
rows by configuration.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from protobench.leaderboard.identity import configuration_of
from protobench.leaderboard.ranking import (
    TIE_RULE,
    BenchmarkTable,
    Leaderboard,
    format_rank,
    leaderboard_table,
    load_accepted,
    markdown,
    pretraining_notes,
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
"""


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


def accuracy_chart(table: BenchmarkTable) -> str:
    """Point chart of each configuration's mean accuracy (%) with its 95% CI as error bars, best on top."""
    rows = table.rows
    fig = Figure(figsize=(6.4, 0.9 + 0.42 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    ax.errorbar([100 * r["mean"] for r in rows], y, xerr=[100 * r["ci95"] for r in rows], fmt="o", capsize=4,
                color="#0969da")
    ax.set_yticks(y, [f"{r['configuration']} (rank {format_rank(r['rank'])})" for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("accuracy (%), mean ± 95% CI")
    ax.set_title(table.label, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def shots_charts(board: Leaderboard) -> list[tuple[str, str]]:
    """(title, PNG URI) per (benchmark name, n_way): accuracy against n_shot, one line per configuration.

    Only fixed episode specs are plotted. When one group mixes query sizes, lines are split by
    n_query too and labelled ``configuration (q=N)``.
    """
    groups: dict[tuple[str, int], list[tuple[BenchmarkTable, dict]]] = defaultdict(list)
    for table in board.tables:
        spec = table.episode_spec
        if spec.get("kind") == "fixed":
            groups[(table.name, spec["n_way"])].extend((table, row) for row in table.rows)
    charts = []
    for (name, n_way), items in sorted(groups.items()):
        mixed_query = len({t.episode_spec["n_query"] for t, _ in items}) > 1
        lines: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
        for table, row in items:
            label = row["configuration"] + (f" (q={table.episode_spec['n_query']})" if mixed_query else "")
            lines[label].append((table.episode_spec["n_shot"], 100 * row["mean"], 100 * row["ci95"]))
        shots = sorted({t.episode_spec["n_shot"] for t, _ in items})
        fig = Figure(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        for label, points in sorted(lines.items()):
            x, mean, ci = zip(*sorted(points), strict=True)
            ax.errorbar(x, mean, yerr=ci, marker="o", capsize=3, label=label)
        ax.set_xticks(shots)
        ax.set_xlabel("shots per class (n_shot)")
        ax.set_ylabel("accuracy (%), mean ± 95% CI")
        title = f"{name}, {n_way}-way"
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        charts.append((title, _png(fig)))
    return charts


def continual_heatmap(result: dict) -> tuple[str, str] | None:
    """(title, PNG URI) of a continual result's accuracy matrix, or None if it has no square matrix."""
    matrix = result.get("evidence", {}).get("accuracy_matrix")
    try:
        values = 100 * np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] == 0:
        return None
    size = values.shape[0]
    fig = Figure(figsize=(1.6 + 0.45 * size, 1.2 + 0.45 * size))
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
    method = configuration_of(result) if "name" in result.get("method", {}) else "?"
    benchmark = result.get("benchmark", {})
    title = f"{method} on {benchmark.get('name', '?')}"
    if benchmark.get("protocol"):
        title += f" ({benchmark['protocol']})"
    ax.set_title(title, fontsize=9)
    return title, _png(fig)


def _continual_caption(result: dict) -> str:
    """``": average accuracy 71.2%, forgetting 9.3%"`` from whichever of those metrics are numbers."""
    metrics = result.get("metrics", {})
    shown = []
    for key, label in (("average_accuracy", "average accuracy"), ("forgetting", "forgetting"), ("bwt", "BWT")):
        value = metrics.get(key, {}).get("value") if isinstance(metrics.get(key), dict) else None
        if isinstance(value, int | float):
            shown.append(f"{label} {100 * value:.1f}%")
    return (": " + ", ".join(shown)) if shown else ""


def _identity_html(row: dict, notes: dict[str, int]) -> tuple[str, str]:
    """The row's ``data-*`` identity attributes, and its configuration and method cells."""
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


def render_html(results: list[dict], generated: dt.datetime | None = None, board: Leaderboard | None = None) -> str:
    """The page for already-accepted ``results`` (few-shot and continual), as one HTML string.

    ``board`` is ``leaderboard_table(results)``, computed here when not given; ``generated``
    (default: now, UTC) is the time printed on the page.
    """
    generated = generated or dt.datetime.now(dt.UTC).replace(microsecond=0)
    board = board if board is not None else leaderboard_table(results)
    notes = pretraining_notes(board)
    continual = [r for r in results if r.get("kind") == "continual"]
    stamp = generated.isoformat()
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>protobench leaderboard</title><style>{CSS}</style></head><body>",
        "<header><h1>protobench leaderboard</h1>",
        f'<p class="meta">Generated <time datetime="{stamp}">{stamp}</time> from {len(results)} accepted '
        f"result file{'s' if len(results) != 1 else ''} ({len(board.tables)} few-shot benchmarks, "
        f"{len(continual)} continual results).</p>",
        f'<p class="rule">Ranking: {html.escape(TIE_RULE)}.</p>',
        '<nav><a href="#overall">average rank</a><a href="#fewshot">few-shot benchmarks</a>'
        '<a href="#shots">accuracy vs shots</a><a href="#continual">continual</a></nav></header>',
        '<section id="overall"><h2>Average rank</h2>',
        f'<p class="note">Mean of each method configuration\'s ranks over the benchmarks it appears in (out of '
        f"{board.n_benchmarks}); lower is better.</p>",
    ]
    if board.overall:
        parts.append('<table class="overall"><thead><tr><th>configuration</th><th>method</th>'
                     '<th class="num">average rank</th><th class="num">benchmarks</th></tr></thead><tbody>')
        for r in board.overall:
            attributes, cells = _identity_html(r, notes)
            parts.append(f'<tr {attributes}>{cells}<td class="num">{r["average_rank"]:.2f}</td>'
                         f'<td class="num">{r["n_benchmarks"]}</td></tr>')
        parts.append("</tbody></table>")
    else:
        parts.append('<p class="empty">No accepted few-shot results yet.</p>')
    parts.append("</section>")

    parts.append('<section id="fewshot"><h2>Few-shot benchmarks</h2>')
    for table in board.tables:
        label = html.escape(table.label)
        parts += [f'<section class="benchmark-section" id="b-{_slug(table.label)}"><h3>{label}</h3>',
                  f'<table class="benchmark" data-benchmark="{label}"><thead><tr><th class="num">rank</th>'
                  '<th>configuration</th><th>method</th><th class="num">accuracy (%)</th><th class="num">episodes</th>'
                  '<th class="num">per-file (seed) means (%)</th><th class="num">average rank</th></tr></thead><tbody>',
                  _rows_html(table, notes), "</tbody></table>",
                  _figure(accuracy_chart(table), f"accuracy with 95% CI, {table.label}",
                          "Mean accuracy over all pooled episodes; bars: 95% CI = 1.96 · std / √n."),
                  "</section>"]
    parts.append("</section>")

    parts.append('<section id="shots"><h2>Accuracy against shots</h2>')
    charts = shots_charts(board)
    if charts:
        parts.append('<div class="grid">')
        parts += [_figure(uri, f"accuracy against shots, {title}", title) for title, uri in charts]
        parts.append("</div>")
    else:
        parts.append('<p class="empty">No fixed-way few-shot results yet.</p>')
    parts.append("</section>")

    parts.append('<section id="continual"><h2>Continual learning: accuracy matrices</h2>')
    heatmaps = [(h, _continual_caption(r)) for r in continual if (h := continual_heatmap(r)) is not None]
    if heatmaps:
        parts.append('<p class="note">R[i][j] = accuracy on experience j\'s test set after training '
                     "experience i.</p><div class=\"grid\">")
        parts += [_figure(uri, f"accuracy matrix, {title}", f"{title}{caption}")
                  for (title, uri), caption in heatmaps]
        parts.append("</div>")
    else:
        parts.append('<p class="empty">No continual results yet.</p>')
    parts.append("</section>")

    if notes:
        parts.append('<section id="notes"><h2>Notes</h2><ol class="notes">')
        parts += [f"<li>pretrained on {html.escape(pre)}; not comparable with methods trained only on the "
                  "benchmark's training classes.</li>" for pre in notes]
        parts.append("</ol></section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def build_site(results_folder: str | Path, out_dir: str | Path, generated: dt.datetime | None = None) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/leaderboard.md`` from the valid files in ``results_folder``.

    Invalid files are skipped with a warning (see :func:`protobench.leaderboard.ranking.load_accepted`).
    ``generated`` (default: now, UTC) is the time printed on the page. Returns the index.html path.
    """
    results = load_accepted(results_folder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    board = leaderboard_table(results)
    (out / "leaderboard.md").write_text(markdown(board), encoding="utf-8")
    index = out / "index.html"
    index.write_text(render_html(results, generated, board), encoding="utf-8")
    return index
