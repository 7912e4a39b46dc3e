"""Leaderboard: loading accepted files, the Meta-Dataset tie rule, average ranks, Markdown, and the
static page rendered in real headless Chromium.

The synthetic results are 3 methods (one unlabelled configuration each, so each row is
``<name>@<params hash>``) x 2 benchmarks whose per-episode accuracies alternate about
``m + 0.08`` / ``m - 0.08``, each a whole number of correct answers out of an episode's 75
queries, so every mean is exact and every std is about 0.08; with 600 episodes (the
leaderboard's minimum per file) the tie threshold between two methods is about
1.96 * sqrt(2 * 0.0064 / 600) = 0.0091 (0.0078 against beta's 1200 pooled 1-shot episodes):

=========  ====================  ========  ====================  ========  ============
method     toy 5-way 1-shot      rank      toy 5-way 5-shot      rank      average rank
=========  ====================  ========  ====================  ========  ============
alpha      0.800                 1.5       0.900                 1         1.25
beta       0.787 + 0.800 pooled  1.5       0.853                 2.5       2.0
gamma      0.700 (pretrained)    3         0.847                 2.5       2.75
=========  ====================  ========  ====================  ========  ============
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import make_fewshot_result as make_result
from PIL import Image
from test_validate_continual import TASK_AWARE3, continual_result

from protobench.fewshot.metrics import mean_ci95
from protobench.leaderboard.identity import configuration_of, hashed_configuration
from protobench.leaderboard.page import build_site, continual_heatmap, render_html
from protobench.leaderboard.ranking import MethodStats, leaderboard_table, load_accepted, markdown, rank, ties
from protobench.leaderboard.validate import validate_result

EXPECTED_RANKS = {1: [("alpha", 1.5), ("beta", 1.5), ("gamma", 3.0)],  # by n_shot of the benchmark
                  5: [("alpha", 1.0), ("beta", 2.5), ("gamma", 2.5)]}
EXPECTED_AVERAGE = {"alpha": 1.25, "beta": 2.0, "gamma": 2.75}
GENERATED = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def alternating(mean: float, n: int, spread: float = 0.08) -> np.ndarray:
    """``n`` (even) accuracies alternating about ``mean + spread`` and ``mean - spread``, each a whole number
    of correct answers out of the 75 queries of a 5-way 15-query episode; ``150 * mean`` must be a
    whole number, and the mean is then exact."""
    total = round(150 * mean)
    assert abs(total - 150 * mean) < 1e-9 and n % 2 == 0
    high = min(75, round(75 * (mean + spread)))
    return np.where(np.arange(n) % 2 == 0, high, total - high) / 75


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """Seven valid files (beta's 1-shot result in two files of two episode seeds) and two invalid ones."""
    folder = tmp_path_factory.mktemp("results")
    files = {
        "alpha_1s": make_result("alpha", 1, alternating(0.80, 600)),
        "beta_1s_seed0": make_result("beta", 1, alternating(118 / 150, 600), seed=0),
        "beta_1s_seed1": make_result("beta", 1, alternating(0.80, 600), seed=1),
        "gamma_1s": make_result("gamma", 1, alternating(0.70, 600), pretraining="ImageNet-1k"),
        "alpha_5s": make_result("alpha", 5, alternating(0.90, 600)),
        "beta_5s": make_result("beta", 5, alternating(128 / 150, 600)),
        "gamma_5s": make_result("gamma", 5, alternating(127 / 150, 600), pretraining="ImageNet-1k"),
    }
    for name, result in files.items():
        (folder / f"{name}.json").write_text(json.dumps(result))
    tampered = copy.deepcopy(files["alpha_1s"])
    tampered["method"]["name"] = "cheater"
    tampered["metrics"]["mean_accuracy"]["value"] = 0.99
    (folder / "tampered.json").write_text(json.dumps(tampered))
    (folder / "garbage.json").write_bytes(b"\x00 not json")
    return folder


@pytest.fixture(scope="module")
def accepted(results_dir) -> list[dict]:
    with pytest.warns(UserWarning) as record:
        results = load_accepted(results_dir)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2, messages
    assert messages[0].startswith("garbage.json: skipped") and "not valid JSON" in messages[0]
    assert messages[1].startswith("tampered.json: skipped") and "$.metrics.mean_accuracy.value" in messages[1]
    return results


@pytest.fixture(scope="module")
def configuration(accepted) -> dict[str, str]:
    """Method name -> its (single) configuration, the row key, in the fixture files."""
    found = {(r["method"]["name"], configuration_of(r)) for r in accepted}
    assert found == {(r["method"]["name"], hashed_configuration(r["method"]["name"], r["method"]["params"]))
                     for r in accepted}
    assert len(found) == 3
    return dict(found)


def test_invalid_files_are_skipped_with_a_warning(accepted):
    assert len(accepted) == 7
    assert "cheater" not in {r["method"]["name"] for r in accepted}
    assert all(Path(r["_path"]).name not in ("tampered.json", "garbage.json") for r in accepted)


def test_seeds_of_one_method_are_pooled(accepted):
    board = leaderboard_table(accepted)
    beta = next(r for r in board.tables[0].rows if r["method"] == "beta")
    pooled = np.concatenate([alternating(118 / 150, 600), alternating(0.80, 600)])
    mean, ci95 = mean_ci95(pooled)
    assert beta["n"] == 1200
    assert beta["mean"] == pytest.approx(mean, abs=1e-12) and beta["ci95"] == pytest.approx(ci95, abs=1e-12)
    assert beta["std"] == pytest.approx(pooled.std(ddof=1), abs=1e-12)
    assert sorted(beta["seed_means"]) == pytest.approx([118 / 150, 0.80], abs=1e-12)
    assert sorted(s["seed"] for s in beta["seeds"]) == [0, 1]
    assert board.skipped == []
    copied = copy.deepcopy(accepted[1])
    again = leaderboard_table([*accepted, copied])
    assert again.tables[0].rows == board.tables[0].rows
    name = Path(copied["_path"]).name
    assert [str(s) for s in again.skipped] == [
        f"skipped {name}: run id {copied['run']['id']} already ranked from {name}; not pooled twice"]


def test_benchmark_ranks_and_ties(accepted, configuration):
    board = leaderboard_table(accepted)
    protocols = {r["benchmark"]["episode_spec"]["n_shot"]: r["benchmark"]["protocol"] for r in accepted}
    assert [t.label for t in board.tables] == [f"toy {protocols[1]}", f"toy {protocols[5]}"]
    for table in board.tables:
        assert [(r["configuration"], r["method"], r["rank"]) for r in table.rows] == [
            (configuration[m], m, rank) for m, rank in EXPECTED_RANKS[table.episode_spec["n_shot"]]]


def test_average_rank_column(accepted, configuration):
    board = leaderboard_table(accepted)
    assert [(r["configuration"], r["method"], r["average_rank"], r["n_benchmarks"]) for r in board.overall] == [
        (configuration[m], m, EXPECTED_AVERAGE[m], 2) for m in ("alpha", "beta", "gamma")]
    assert all(row["average_rank"] == EXPECTED_AVERAGE[row["method"]] for t in board.tables for row in t.rows)


# --- rows are method configurations -----------------------------------------------------------


def relabelled(result: dict, label: str) -> dict:
    """A copy of a built result whose configuration is the suite label ``label``."""
    result = copy.deepcopy(result)
    result["method"]["configuration"] = label
    assert validate_result(result) == []
    return result


def as_version_1_1(result: dict, label: str | None) -> dict:
    """A copy of a built result as a 1.1.0 writer made it: no configuration or params hash, the
    suite label (if any) in ``method.params["label"]``."""
    result = copy.deepcopy(result)
    result["schema_version"] = "1.1.0"
    del result["method"]["configuration"], result["method"]["params_hash"]
    if label is not None:
        result["method"]["params"]["label"] = label
    assert validate_result(result) == []
    return result


def rows_of(results: list[dict]) -> list[tuple[str, str, int]]:
    """(configuration, method, episodes) of the rows of the one benchmark table."""
    (table,) = leaderboard_table(results).tables
    return sorted((r["configuration"], r["method"], r["n"]) for r in table.rows)


def test_two_configurations_of_one_method_are_two_rows():
    slow = [make_result("protonet", 1, alternating(0.80, 600), seed=s, params={"lr": 1e-3}) for s in (0, 1)]
    fast = make_result("protonet", 1, alternating(0.70, 600), seed=0, params={"lr": 1e-2})
    slow_config, fast_config = (hashed_configuration("protonet", r["method"]["params"]) for r in (slow[0], fast))
    assert {configuration_of(r) for r in slow} == {slow_config} and configuration_of(fast) == fast_config
    assert slow_config != fast_config
    # the two seeds of lr 1e-3 pool into one row of 1200 episodes; lr 1e-2 is a row of its own
    assert rows_of([*slow, fast]) == sorted([(slow_config, "protonet", 1200), (fast_config, "protonet", 600)])
    board = leaderboard_table([*slow, fast])
    assert [(r["configuration"], r["average_rank"]) for r in board.overall] == [(slow_config, 1.0), (fast_config, 2.0)]
    text = markdown(board)
    assert f"| {slow_config} | protonet | 80.00 ± " in text and f"| {fast_config} | protonet | 70.00 ± " in text
    assert f"| {slow_config} | protonet | 1 | 1.00 |" in text


def test_labelled_configurations_of_one_method_are_two_rows_on_the_page():
    built = make_result("protonet", 1, alternating(0.80, 600))
    one_shot = relabelled(built, "protonet-1shot")
    five_shot = relabelled(make_result("protonet", 1, alternating(0.70, 600)), "protonet-5shot")
    assert rows_of([one_shot, five_shot]) == [("protonet-1shot", "protonet", 600), ("protonet-5shot", "protonet", 600)]
    page = render_html([one_shot, five_shot], GENERATED)
    for label, rank_ in (("protonet-1shot", 1), ("protonet-5shot", 2)):
        assert (f'<tr data-configuration="{label}" data-method="protonet" data-rank="{rank_}">'
                f'<td class="num rank">{rank_}</td><td class="configuration">{label}</td>'
                '<td class="method">protonet</td>') in page
        assert f'<tr data-configuration="{label}" data-method="protonet"><td class="configuration">' in page


def test_version_1_1_files_are_keyed_by_their_label_else_their_name():
    built = [make_result("protonet", 1, alternating(mean, 600), seed=seed) for seed, mean in enumerate((0.8, 0.7, 0.6))]
    one_shot, five_shot = as_version_1_1(built[0], "protonet-1shot"), as_version_1_1(built[1], "protonet-5shot")
    unlabelled = as_version_1_1(built[2], None)
    assert [configuration_of(r) for r in (one_shot, five_shot, unlabelled)] == [
        "protonet-1shot", "protonet-5shot", "protonet"]
    assert rows_of([one_shot, five_shot, unlabelled]) == [
        ("protonet", "protonet", 600), ("protonet-1shot", "protonet", 600), ("protonet-5shot", "protonet", 600)]
    # a 1.2.0 file whose configuration is the same label pools with the 1.1.0 file
    newer = relabelled(make_result("protonet", 1, alternating(0.8, 600), seed=3), "protonet-1shot")
    assert rows_of([one_shot, newer]) == [("protonet-1shot", "protonet", 1200)]


def test_one_label_on_different_methods_or_params_pools_with_a_warning():
    base = relabelled(make_result("protonet", 1, alternating(0.8, 600), params={"lr": 1e-3}), "mine")
    other_params = relabelled(make_result("protonet", 1, alternating(0.8, 600), params={"lr": 1e-2}), "mine")
    other_method = relabelled(make_result("matchingnet", 1, alternating(0.8, 600), params={"lr": 1e-3}), "mine")
    with pytest.warns(UserWarning, match="mine: pooled files disagree on method.params_hash"):
        assert rows_of([base, other_params]) == [("mine", "protonet", 1200)]
    with pytest.warns(UserWarning, match=r"mine: pooled files name different methods \['matchingnet', 'protonet'\]"):
        assert rows_of([base, other_method]) == [("mine", "matchingnet; protonet", 1200)]


def stats(configuration: str, mean: float, std: float = 0.1, n: int = 600) -> MethodStats:
    return MethodStats(configuration=configuration, method="m", mean=mean, std=std, n=n)


def test_rank_is_judged_against_the_group_leader_not_chained():
    # a ties b, b ties c, but a does not tie c: c starts the next group.
    rows = rank([stats("c", 0.78), stats("a", 0.80), stats("b", 0.79)])
    assert [(r["configuration"], r["rank"]) for r in rows] == [("a", 1.5), ("b", 1.5), ("c", 3.0)]
    assert ties(stats("b", 0.79), stats("c", 0.78)) and not ties(stats("a", 0.80), stats("c", 0.78))


@pytest.mark.parametrize(("means", "expected"), [
    ([0.9, 0.8, 0.7, 0.6], [1.0, 2.0, 3.0, 4.0]),          # all distinct
    ([0.801, 0.800, 0.799, 0.798], [2.5, 2.5, 2.5, 2.5]),  # all tie with the leader
    ([0.9, 0.80, 0.795, 0.5], [1.0, 2.5, 2.5, 4.0]),       # a tie in the middle
    ([0.9, 0.8, 0.7, 0.695], [1.0, 2.0, 3.5, 3.5]),        # a tie at the bottom
])
def test_rank_shares_the_average_position(means, expected):
    rows = rank([stats(f"m{i}", m) for i, m in enumerate(means)])
    assert [r["rank"] for r in rows] == expected
    assert [r["configuration"] for r in rows] == [f"m{i}" for i in range(len(means))]


def test_tie_threshold_uses_both_variances_and_sizes():
    a, b = stats("a", 0.80, std=0.1, n=600), stats("b", 0.0, std=0.2, n=100)
    threshold = 1.96 * np.sqrt(0.1**2 / 600 + 0.2**2 / 100)
    assert ties(a, stats("b", 0.80 - 0.99 * threshold, std=0.2, n=100))
    assert not ties(a, stats("b", 0.80 - 1.01 * threshold, std=0.2, n=100))
    assert rank([a, b])[0]["ci95"] == pytest.approx(1.96 * 0.1 / np.sqrt(600))


def test_markdown(accepted, configuration):
    board = leaderboard_table(accepted)
    text = markdown(board)
    alpha_ci = 100 * mean_ci95(alternating(0.80, 600))[1]
    alpha, beta, gamma = (configuration[m] for m in ("alpha", "beta", "gamma"))
    assert f"### toy: {board.tables[0].protocol}" in text
    assert "| configuration | method | accuracy (%) | episodes | rank |" in text
    assert f"| {alpha} | alpha | 80.00 ± {alpha_ci:.2f} | 600 | 1.5 |" in text
    assert re.search(rf"^\| {re.escape(gamma)} \[\^p1\] \| gamma \| 70\.00 ± \d\.\d\d \| 600 \| 3 \|$", text, re.M)
    assert re.search(rf"^\| {re.escape(gamma)} \[\^p1\] \| gamma \| 84\.67 ± \d\.\d\d \| 600 \| 2\.5 \|$", text, re.M)
    assert "| configuration | method | benchmarks | average rank |" in text
    assert f"| {alpha} | alpha | 2 | 1.25 |" in text and f"| {beta} | beta | 2 | 2.00 |" in text
    assert f"| {gamma} [^p1] | gamma | 2 | 2.75 |" in text
    assert "over the benchmarks it appears in" in text
    assert "[^p1]: pretrained on ImageNet-1k; not comparable" in text
    assert "[^p" not in text.split("### Average rank")[0].replace(f"{gamma} [^p1]", "")  # only gamma is marked
    assert "No accepted few-shot results yet." in markdown(leaderboard_table([]))


def decode_png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_continual_heatmap_and_its_absence(accepted):
    continual = continual_result(task_aware=TASK_AWARE3)
    continual["method"]["configuration"] = "ewc"
    title, uri = continual_heatmap(continual)
    assert title == "ewc on split-toy (class-incremental, 3 experiences)"
    assert decode_png(uri).size[0] > 100
    assert continual_heatmap({"kind": "continual", "evidence": {"accuracy_matrix": [[0.5, 0.5]]}}) is None
    page = render_html([*accepted, continual], GENERATED)
    assert 'alt="accuracy matrix, ewc on split-toy class-incremental, 3 experiences, mean of 1 seed(s)"' in page
    assert "split-toy class-incremental, 3 experiences" in page
    assert "No continual results yet." not in page
    assert "No continual results yet." in render_html(accepted, GENERATED)


# --- the page in a real browser ---------------------------------------------------------------

CONSOLE_LINE = re.compile(r":CONSOLE[:(\]]|Uncaught")
IMAGE_PROBE = ("<script>addEventListener('load', () => { const all = [...document.images]; "
               "document.body.dataset.images = all.filter(i => i.complete && i.naturalWidth > 0).length "
               "+ '/' + all.length; });</script>")


def chromium_binary() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        return binary
    reason = "chromium not found (apt-get install -y chromium) for the headless page tests"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, logging console messages to stderr."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def console_problems(stderr: str) -> list[str]:
    """Console messages (Chromium logs every level as ``INFO:CONSOLE``) and uncaught errors."""
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


class TableRows(HTMLParser):
    """Collects ``(data-configuration, data-method, data-rank)`` of body rows per ``table.benchmark``
    and the body attributes."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[tuple[str, str]]] = {}
        self.body: dict[str, str | None] = {}
        self.current: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "table":
            self.current = attrs.get("data-benchmark") if "benchmark" in (attrs.get("class") or "").split() else None
            if self.current is not None:
                self.tables[self.current] = []
        elif tag == "tr" and self.current is not None and "data-method" in attrs:
            self.tables[self.current].append((attrs["data-configuration"], attrs["data-method"], attrs["data-rank"]))

    def handle_endtag(self, tag):
        if tag == "table":
            self.current = None


@pytest.fixture(scope="module")
def site(results_dir, accepted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    with pytest.warns(UserWarning):
        index = build_site(results_dir, out, generated=GENERATED)
    assert index == out / "index.html"
    return index


def test_site_files(site, accepted):
    page = site.read_text()
    assert (site.parent / "leaderboard.md").read_text() == markdown(leaderboard_table(accepted))
    assert "2025-01-02T03:04:05+00:00" in page and "tie when their mean accuracies differ by less than" in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "page must not reference external resources"
    assert "<script" not in page and "No continual results yet." in page
    assert page.count('<img src="data:image/png;base64,') == 3  # two benchmark charts, one shots chart


def test_console_detection_works(tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text('<!doctype html><meta http-equiv="Content-Security-Policy" content="img-src data:">'
                     '<img src="https://invalid.invalid/x.png"><script>console.error("boom"); missing();</script>')
    problems = console_problems(run_chromium(tmp_path, "--dump-dom", probe.as_uri()).stderr)
    assert any('"boom"' in p for p in problems) and any("Uncaught" in p for p in problems)
    assert any("Content Security Policy" in p for p in problems)


def expected_page_rows(accepted: list[dict], configuration: dict[str, str]) -> dict[str, list[tuple[str, str, str]]]:
    """{benchmark label: [(data-configuration, data-method, data-rank)]} that the page's tables must hold."""
    labels = {t.episode_spec["n_shot"]: t.label for t in leaderboard_table(accepted).tables}
    return {labels[n_shot]: [(configuration[m], m, f"{r:g}") for m, r in rows]
            for n_shot, rows in EXPECTED_RANKS.items()}


def test_page_table_rows_without_a_browser(site, accepted, configuration):
    parser = TableRows()
    parser.feed(site.read_text())
    assert parser.tables == expected_page_rows(accepted, configuration)


def test_page_dom_in_chromium(site, accepted, configuration, tmp_path):
    # A copy with a load-time probe that records how many images decoded (the page itself has no script).
    probed = tmp_path / "probed.html"
    page = site.read_text().replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';")
    probed.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"))
    done = run_chromium(tmp_path, "--dump-dom", probed.as_uri())
    assert console_problems(done.stderr) == []
    parser = TableRows()
    parser.feed(done.stdout)
    assert parser.tables == expected_page_rows(accepted, configuration)
    assert parser.body.get("data-images") == "3/3"


def test_page_screenshot_in_chromium(site, tmp_path):
    shot = tmp_path / "shot.png"
    done = run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars",
                        site.as_uri())
    assert console_problems(done.stderr) == []
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 1600)
    low, high = image.getextrema()
    assert high - low > 100, "screenshot is blank"
