"""Results from strangers (DESIGN.md): the leaderboard never fails because of one file, shows no
live markup from a file, ranks only files of at least 600 episodes, and accepts files under safe
names inside the results folder only. Also the average-rank order, numeric setting order and
chart axes.

Per-episode accuracies here are multiples of 1/75 (5-way 15-query: 75 queries per episode), so
the files stay possible accuracies for a stricter validator.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import re
import threading
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import make_fewshot_result
from test_validate_continual import continual_result

from protobench.benchmarks.cli import main
from protobench.fewshot import EpisodeSpec
from protobench.leaderboard import page
from protobench.leaderboard.identity import configuration_of
from protobench.leaderboard.page import (
    accuracy_figure,
    accuracy_limits,
    build_site_report,
    render_html,
    render_page,
    shots_figure,
    shots_groups,
)
from protobench.leaderboard.ranking import MIN_EPISODES, Skipped, display_text, leaderboard_table, markdown
from protobench.leaderboard.submit import SubmissionError, _write_new, accepted_name, submit
from protobench.leaderboard.validate import validate_result

GENERATED = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
MATH = r"$\foo{$ and $x^{$"
MARKUP = ("<script>alert(1)</script><img src=x onerror=alert(2)> | `code` [click](javascript:alert(3)) "
          "![i](x) **b** _i_ ~s~ www.evil.example https://evil.example $\\frac{1}{2}$ &amp; [^p1] \\| end\\")
SURROGATE = "ImageNet\ud800 and \udfff"
SAFE_NAME = re.compile(r"[a-z0-9-]+__[a-z0-9-]+__[a-z0-9-]+__[0-9a-f]{16}\.json")


def accuracies(k: int, n: int = MIN_EPISODES, spread: int = 6) -> np.ndarray:
    """``n`` accuracies alternating ``(k + spread) / 75`` and ``(k - spread) / 75``: mean exactly ``k / 75``."""
    return np.where(np.arange(n) % 2 == 0, k + spread, k - spread) / 75


def make(method: str, k: int, n: int = MIN_EPISODES, *, spread: int = 6, n_way: int = 5, n_shot: int = 1,
         seed: int = 0, **kwargs) -> dict:
    """A valid few-shot result of ``method`` on "toy", ``n_way``-way ``n_shot``-shot 15-query, mean ``k / 75``."""
    result = make_fewshot_result(method, n_shot, accuracies(k, n, spread), seed=seed, **kwargs)
    if n_way != 5:
        result["benchmark"]["episode_spec"]["n_way"] = n_way
        result["benchmark"]["protocol"] = EpisodeSpec(n_way, n_shot, 15).key
        result["episodes"]["n_classes"] = max(result["episodes"]["n_classes"], n_way)
    assert validate_result(result) == []
    return result


def with_fields(result: dict, *, protocol: str | None = None, pretraining: str | None = None,
                label: str | None = None, n_shot: int | None = None) -> dict:
    """A copy with a new run id and hostile fields: ``benchmark.protocol``, ``method.pretraining``, a
    1.1.0-style configuration label (``method.params["label"]``), ``episode_spec.n_shot``. Not validated."""
    result = copy.deepcopy(result)
    changes = repr((protocol, pretraining, label, n_shot)).encode("utf-8", "surrogatepass")
    result["run"]["id"] = f"{result['run']['id']}-{hashlib.sha256(changes).hexdigest()[:8]}"
    if protocol is not None:
        result["benchmark"]["protocol"] = protocol
    if pretraining is not None:
        result["method"]["pretraining"] = pretraining
    if label is not None:
        result["schema_version"] = "1.1.0"
        del result["method"]["configuration"], result["method"]["params_hash"]
        result["method"]["params"]["label"] = label
    if n_shot is not None:
        result["benchmark"]["episode_spec"]["n_shot"] = n_shot
    return result


def write(folder: Path, name: str, result: dict | bytes) -> Path:
    path = folder / name
    path.write_bytes(result if isinstance(result, bytes) else json.dumps(result).encode("utf-8"))
    return path


class Page(HTMLParser):
    """The rows of each ``table.benchmark`` (``data-*`` attributes), the overall rows, image sources,
    and every tag name seen."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[tuple[str, str, str]]] = {}
        self.overall: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.tags: set[str] = set()
        self._table: tuple[str, str | None] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            kind = (attrs.get("class") or "").split()
            self._table = ("overall", None) if "overall" in kind else ("benchmark", attrs.get("data-benchmark"))
            if self._table[0] == "benchmark":
                self.tables[self._table[1]] = []
        elif tag == "tr" and self._table is not None and "data-configuration" in attrs:
            if self._table[0] == "overall":
                self.overall.append((attrs["data-configuration"], attrs["data-method"]))
            else:
                self.tables[self._table[1]].append(
                    (attrs["data-configuration"], attrs["data-method"], attrs["data-rank"]))

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def in_thread(function, *args, timeout: float = 120):
    """``function(*args)`` in a daemon thread; fails (instead of hanging) if it has not returned in ``timeout`` s."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # noqa: B036 - re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{function.__name__} still running after {timeout} s (blocked on a file?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture(scope="module")
def good() -> list[dict]:
    """Two configurations on 5-way 1-shot and 5-way 5-shot."""
    return [make("alpha", 60, n_shot=1), make("beta", 54, n_shot=1), make("alpha", 66, n_shot=5),
            make("beta", 63, n_shot=5)]


# --- 1. one bad file never takes the page down -------------------------------------------------


def test_text_from_results_is_drawn_literally(good):
    """Mathtext in a protocol, a configuration or a continual title is drawn as written, not parsed."""
    mathy = with_fields(make("gamma", 57, n_shot=1), protocol=MATH, label=MATH)
    continual = continual_result()
    continual["benchmark"]["protocol"] = MATH
    html_text = render_html([*good, mathy, continual], GENERATED)
    assert "not drawn" not in html_text and 'id="skipped"' not in html_text  # every chart drawn, nothing left out
    # 3 benchmark charts (1-shot, 5-shot, the math protocol), 1 shots chart (5-way), 1 heatmap
    assert len(Page(html_text).images) == 5
    board = leaderboard_table([*good, mathy])
    (table,) = [t for t in board.tables if t.protocol == MATH]
    ax = accuracy_figure(table).axes[0]
    assert ax.get_title() == f"toy {MATH}"
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{MATH} (rank 1)"]
    assert all(not t.get_usetex() for t in ax.get_yticklabels())


def test_an_unbounded_integer_is_never_converted_to_float(good):
    huge = with_fields(make("gamma", 57, n_shot=1), protocol="5-way-huge-shot", n_shot=10**400)
    html_text = render_html([*good, huge], GENERATED)
    assert "toy 5-way-huge-shot" in Page(html_text).tables  # the table is there, the point is not plotted:
    assert ("<li><code>accuracy-vs-shots point of toy 5-way-huge-shot</code>: n_way 5, n_shot 100000... "
            "(401 digits), n_query 15: outside 1..") in html_text
    assert [t.protocol for t in leaderboard_table([*good, huge]).tables][-1] == "5-way-huge-shot"  # sorted last


def test_lone_surrogates_and_control_characters_are_written_as_replacement_characters(good):
    odd = with_fields(make("gamma", 57), pretraining=SURROGATE, label="label\ud800\u202e\x07")
    text = render_html([*good, odd], GENERATED)
    md = markdown(leaderboard_table([*good, odd]))
    assert text.encode("utf-8") and md.encode("utf-8")  # a lone surrogate would raise UnicodeEncodeError
    assert "pretrained on ImageNet\ufffd and \ufffd;" in text and "ImageNet\ufffd and \ufffd;" in md
    assert 'data-configuration="label\ufffd\ufffd\ufffd"' in text


def test_a_chart_that_fails_is_listed_and_the_page_goes_on(good, monkeypatch):
    real = page.accuracy_chart

    def fails_on_five_shot(table):
        if table.episode_spec["n_shot"] == 5:
            raise RuntimeError("boom\nsecond line")
        return real(table)

    monkeypatch.setattr(page, "accuracy_chart", fails_on_five_shot)
    html_text, skipped = render_page(good, GENERATED)
    assert [str(s) for s in skipped] == ["skipped accuracy chart of toy 5-way-5-shot-15-query: "
                                         "not drawn: RuntimeError: boom second line"]
    tables = Page(html_text).tables
    assert set(tables) == {"toy 5-way-1-shot-15-query", "toy 5-way-5-shot-15-query"}
    assert all(len(rows) == 2 for rows in tables.values())
    assert "accuracy chart: not drawn: RuntimeError: boom second line" in html_text
    assert '<section id="skipped">' in html_text
    assert "<code>accuracy chart of toy 5-way-5-shot-15-query</code>" in html_text


def build_mixed_folder(folder: Path, good: list[dict]) -> tuple[set[str], set[str]]:
    """Good files and hostile ones in ``folder``; (names that must be skipped, names that are hostile
    but valid today, which are either shown or skipped)."""
    for i, result in enumerate(good):
        write(folder, f"good{i}.json", result)
    write(folder, "garbage.json", b"\x00 not json")
    tampered = copy.deepcopy(good[0])
    tampered["metrics"]["mean_accuracy"]["value"] = 0.99
    write(folder, "tampered.json", tampered)
    write(folder, "tiny.json", make("cheat", 75, n=2, spread=0))  # 2 episodes, mean 1.0
    write(folder, "zcopy.json", good[0])  # same run id as good0.json, read after it
    (folder / "folder.json").mkdir()
    must_skip = {"garbage.json", "tampered.json", "tiny.json", "zcopy.json", "folder.json"}
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo.json")  # reading it would block forever
        (folder / "link.json").symlink_to(folder / "good0.json")
        must_skip |= {"fifo.json", "link.json"}
    hostile = {"math.json": with_fields(good[0], protocol=MATH), "markup.json": with_fields(good[1], protocol=MARKUP),
               "surrogate.json": with_fields(good[0], pretraining=SURROGATE),
               "huge.json": with_fields(good[0], protocol="huge", n_shot=10**400)}
    for name, result in hostile.items():
        write(folder, name, result)
    return must_skip, set(hostile)


def test_leaderboard_build_over_good_and_hostile_files(good, tmp_path, capsys):
    results, out = tmp_path / "results", tmp_path / "site"
    results.mkdir()
    must_skip, maybe_skip = build_mixed_folder(results, good)
    assert in_thread(main, ["leaderboard", "build", "--results-dir", str(results), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith("warning: ")]
    skipped_names = [re.match(r"skipped (.+?): \S", line)[1] for line in lines]
    assert len(skipped_names) == len(set(skipped_names)) == len(lines)  # one line per skipped file
    assert must_skip <= set(skipped_names) <= must_skip | maybe_skip | {
        f"accuracy-vs-shots point of toy {r}" for r in ("huge", MATH, MARKUP)}
    assert "skipped tiny.json: 2 test episodes; the leaderboard ranks few-shot results of at least 600" in captured.err
    assert "skipped zcopy.json: run id" in captured.err
    assert "skipped garbage.json: not a valid result: $:" in captured.err
    assert captured.out.startswith(f"leaderboard written to {out / 'index.html'}")

    text = (out / "index.html").read_bytes().decode("utf-8")
    (out / "leaderboard.md").read_bytes().decode("utf-8")
    tables = Page(text).tables
    configurations = {r["method"]["name"]: configuration_of(r) for r in good}
    for result in good:
        rows = tables[f"toy {result['benchmark']['protocol']}"]
        assert (configurations[result["method"]["name"]], result["method"]["name"]) in {r[:2] for r in rows}
    for name in skipped_names:
        assert f"<code>{name}</code>" in text  # the page lists what the command printed
    shown = {"math.json": f"toy {MATH}", "markup.json": f"toy {MARKUP}", "huge.json": "toy huge"}
    for name, label in shown.items():
        assert (name in skipped_names) != (label in tables), name  # either ranked or listed as skipped


def test_submit_and_build_never_block_on_a_fifo(tmp_path, capsys):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(SubmissionError, match="is not a regular file"):
        in_thread(submit, tmp_path / "fifo.json", tmp_path / "results")
    site = in_thread(build_site_report, tmp_path, tmp_path / "site")
    assert [str(s) for s in site.skipped] == ["skipped fifo.json: not a regular file (a link, folder, FIFO or "
                                              "device); not read"]


# --- 2. no live markup ------------------------------------------------------------------------


def unescaped(text: str, chars: str) -> list[str]:
    """The characters of ``chars`` in ``text`` not preceded by an escaping backslash."""
    found, escaped = [], False
    for char in text:
        if not escaped and char in chars:
            found.append(char)
        escaped = not escaped and char == "\\"
    return found


def test_markdown_shows_fields_literally(good):
    hostile = with_fields(make("gamma", 57), protocol=MARKUP, pretraining=MARKUP, label=MARKUP + "\nnew | row")
    text = markdown(leaderboard_table([*good, hostile]))
    assert "<" not in text and ">" not in text  # no raw HTML at all: the fields' < and > are entities
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;&lt;img src=x onerror=alert\\(2\\)&gt;" in text
    assert "&amp;amp;" in text  # a literal "&amp;" stays literal
    assert "javascript\\:alert" in text and "https\\://evil" in text and "www\\.evil" in text
    own_marks = re.compile(r" \[\^p\d+\]|^\[\^p\d+\]:", re.M)  # the footnotes markdown() writes itself
    fields = [line for line in own_marks.sub("", text).splitlines() if "alert" in line]
    assert len(fields) == 4  # the heading, the benchmark row, the average-rank row, the footnote
    assert all(unescaped(line, "[]`$*_~()!") == [] for line in fields)
    for line in text.splitlines():
        if line.startswith("| ") and "---" not in line:
            columns = 6 if "accuracy (%)" in line or "±" in line else 5  # benchmark rows / average-rank rows
            assert len(unescaped(line, "|")) == columns, line  # no cell was split or merged


def test_html_shows_fields_literally(good):
    hostile = with_fields(make("gamma", 57), protocol=MARKUP + '"><b x=\'', pretraining=MARKUP, label=MARKUP)
    text = render_html([*good, hostile], GENERATED)
    parsed = Page(text)
    assert parsed.tags.isdisjoint({"script", "b"})
    assert all(src.startswith("data:image/png;base64,") for src in parsed.images)
    label = f"toy {display_text(MARKUP + chr(34) + '><b x=' + chr(39))}"
    assert parsed.tables[label] == [(display_text(MARKUP), "gamma", "1")]  # attributes read back as written
    assert (display_text(MARKUP), "gamma") in parsed.overall


# --- 3. minimum episodes ----------------------------------------------------------------------


def test_only_files_of_at_least_600_episodes_are_ranked(good):
    tiny = make("cheat", 75, n=2, spread=0)  # mean 1.0 over 2 episodes
    short = make("short", 66, n=MIN_EPISODES - 1)
    board = leaderboard_table([*good, tiny, short])
    names = {row["method"] for table in board.tables for row in table.rows}
    assert names == {"alpha", "beta"} and board.tables[0].rows[0]["method"] == "alpha"
    assert [s.reason for s in board.skipped] == [
        f"{n} test episodes; the leaderboard ranks few-shot results of at least 600 episodes" for n in (2, 599)]
    assert MIN_EPISODES == 600
    assert "short" in {row["method"] for row in leaderboard_table([*good, short], min_episodes=2).tables[0].rows}


def test_submit_refuses_a_file_with_too_few_episodes(tmp_path, capsys):
    path = write(tmp_path, "tiny.json", make("cheat", 75, n=2, spread=0))
    assert main(["submit", str(path), "--results-dir", str(tmp_path / "results")]) == 1
    assert f"refused: {path}: 2 test episodes; the leaderboard ranks few-shot results of at least 600" in (
        capsys.readouterr().err)
    assert not (tmp_path / "results").exists()


# --- 4. accepted file names -------------------------------------------------------------------

HOSTILE_PROTOCOLS = ["../../evil", "a/b", "/etc/passwd", "..", "C:\\x\\y", "ünïcødé ✓ 5-way", "", "-rf", "x" * 128,
                     "\u202eevil", "a\x00b", MARKUP]


@pytest.mark.parametrize("protocol", HOSTILE_PROTOCOLS)
def test_accepted_names_use_a_safe_alphabet_and_the_content_hash(protocol):
    result = with_fields(make("alpha", 60), protocol=protocol, label="Prötö Nét/../x")
    content = json.dumps(result).encode()
    name = accepted_name(result, content)
    assert SAFE_NAME.fullmatch(name), name
    assert len(name) <= 3 * 40 + 3 * 2 + 16 + len(".json")
    assert name.startswith("toy__pr-t-n-t-x__") and name.endswith(f"__{hashlib.sha256(content).hexdigest()[:16]}.json")


@pytest.mark.parametrize("protocol", ["../../evil", "a/b", "../" * 10 + "tmp/evil", "ünïcødé"])
def test_submit_writes_only_inside_the_results_folder(protocol, tmp_path, monkeypatch):
    """Whatever a validator lets through, the accepted name is safe and inside the folder (the validator
    itself may refuse these protocols: it is switched off here to test the names alone)."""
    monkeypatch.setattr("protobench.leaderboard.submit.validate_file", lambda path: [])
    source = write(tmp_path, "source.json", with_fields(make("alpha", 60), protocol=protocol))
    results = tmp_path / "deep" / "results"
    before = set(tmp_path.rglob("*"))
    accepted = submit(source, results)
    assert accepted.parent == results and SAFE_NAME.fullmatch(accepted.name)
    assert accepted.read_bytes() == source.read_bytes()
    assert set(tmp_path.rglob("*")) - before == {tmp_path / "deep", results, accepted}  # no temporary file left
    with pytest.raises(SubmissionError, match="already accepted"):
        submit(source, results)


def test_an_existing_file_is_never_replaced(tmp_path):
    source = write(tmp_path, "source.json", make("alpha", 60))
    target = tmp_path / "accepted.json"
    target.write_bytes(b"already here")
    with pytest.raises(SubmissionError, match="already accepted"):
        _write_new(target, source.read_bytes(), source)
    assert target.read_bytes() == b"already here" and sorted(p.name for p in tmp_path.iterdir()) == [
        "accepted.json", "source.json"]


def test_a_file_whose_spec_differs_from_its_benchmarks_is_not_ranked_against_it(good):
    """Same name and protocol, but 20-way episodes: not comparable with the 5-way files, so not ranked there."""
    odd = make("gamma", 57)
    odd["benchmark"]["episode_spec"]["n_way"] = 20
    board = leaderboard_table([*good, odd])
    assert {row["method"] for row in board.tables[0].rows} == {"alpha", "beta"}
    assert board.tables[0].episode_spec["n_way"] == 5
    [skipped] = board.skipped
    assert skipped.reason.startswith('episode_spec {"kind":"fixed","n_query":15,"n_shot":1,"n_way":20} differs from '
                                     '{"kind":"fixed","n_query":15,"n_shot":1,"n_way":5}, the spec of 2 other file(s)')


# --- 5. average rank, setting order, chart axes ---------------------------------------------


def test_average_rank_rows_are_sorted_by_benchmark_count_first():
    """``wide`` is ranked on three benchmarks (2, 1, 1: average 1.33), ``narrow`` on one (1: average 1.0)."""
    results = [make("narrow", 69, n_shot=1), make("wide", 60, n_shot=1), make("wide", 60, n_shot=5),
               make("wide", 60, n_way=20, n_shot=1)]
    board = leaderboard_table(results)
    assert [(r["method"], r["n_benchmarks"], round(r["average_rank"], 2)) for r in board.overall] == [
        ("wide", 3, 1.33), ("narrow", 1, 1.0)]
    overall = markdown(board).split("### Average rank")[1]
    assert overall.index("| wide@") < overall.index("| narrow@")
    assert "sorted by the number of benchmarks ranked on" in overall
    assert [m for _, m in Page(render_html(results, GENERATED)).overall] == ["wide", "narrow"]


def test_settings_are_sorted_numerically():
    results = [make("a", 60, n_way=20, n_shot=5), make("a", 60, n_way=20, n_shot=1), make("a", 60, n_shot=5),
               make("a", 60, n_shot=1)]
    expected = ["5-way-1-shot-15-query", "5-way-5-shot-15-query", "20-way-1-shot-15-query", "20-way-5-shot-15-query"]
    board = leaderboard_table(results)
    assert [t.protocol for t in board.tables] == expected
    text = markdown(board)
    assert [text.index(f"### toy: {p}") for p in expected] == sorted(text.index(f"### toy: {p}") for p in expected)
    assert list(Page(render_html(results, GENERATED)).tables) == [f"toy {p}" for p in expected]
    groups, _ = shots_groups(board)
    assert list(groups) == [("toy", 5), ("toy", 20)]


@pytest.mark.parametrize(("lows", "highs", "expected"), [
    ([79.5], [80.5], (75.0, 85.0)),       # one narrow bar: at least 10 points, centred
    ([98.0], [99.5], (90.0, 100.0)),      # near the top: moved inside [0, 100], span kept
    ([0.2], [1.0], (0.0, 10.0)),          # near the bottom
    ([40.0, 60.0], [50.0, 80.0], (38.0, 82.0)),  # a wide spread: 5% margin
])
def test_accuracy_limits(lows, highs, expected):
    assert accuracy_limits(lows, highs) == pytest.approx(expected)


def test_a_single_configuration_chart_is_not_zoomed_in(good):
    board = leaderboard_table(good[:1])
    low, high = accuracy_figure(board.tables[0]).axes[0].get_xlim()
    row = board.tables[0].rows[0]
    assert high - low >= 10 and 0 <= low < 100 * (row["mean"] - row["ci95"]) < 100 * (row["mean"] + row["ci95"]) < high
    groups, _ = shots_groups(board)
    [((name, n_way), items)] = groups.items()
    low, high = shots_figure(name, n_way, items).axes[0].get_ylim()
    assert high - low >= 10 and 0 <= low and high <= 100


def test_skipped_lines_are_one_line_each():
    assert str(Skipped("a.json", "why")) == "skipped a.json: why"
    assert display_text("a\nb\r\nc\x00d\ud800") == "a b  c\ufffdd\ufffd"
    assert display_text("x" * 1000) == "x" * 255 + "\u2026"
