"""``validate --data-root``: episodes re-derived from the recorded key, spec and dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protobench.benchmarks.cli import main
from protobench.leaderboard.identity import hashed_configuration

RESULTS = Path(__file__).resolve().parent.parent / "leaderboard" / "results"
SUITE = """
name = "rederive"
benchmarks = ["omniglot-subset"]
seeds = [3]
tests = [{ n_way = 5, n_shot = 1, n_query = 5, episodes = 64 }, { n_way = 5, n_shot = 5, n_query = 5, episodes = 64 }]

[[methods]]
method = "protonet"
"""


@pytest.fixture(scope="module")
def embedded_results(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rederive")
    (folder / "suite.toml").write_text(SUITE)
    assert main(["run", str(folder / "suite.toml"), "--out", str(folder / "out"), "--quiet"]) == 0
    return {p.name.split("__")[2]: p for p in (folder / "out").glob("*.json")}


def test_committed_omniglot_results_agree_with_their_episodes(omniglot_root, capsys):
    files = sorted(RESULTS.glob("omniglot__*.json"))
    assert len(files) == 4
    assert main(["validate", *map(str, files), "--data-root", str(omniglot_root)]) == 0
    assert capsys.readouterr().out.count(": ok") == 4


def tamper(path: Path, tmp_path: Path, change) -> Path:
    result = json.loads(path.read_text())
    change(result)
    out = tmp_path / f"tampered-{path.name}"
    out.write_text(json.dumps(result))
    return out


def test_embedded_results_agree_and_a_copied_digest_fails(embedded_results, tmp_path, capsys):
    one_shot, five_shot = embedded_results["5-way-1-shot-5-query"], embedded_results["5-way-5-shot-5-query"]
    assert main(["validate", str(one_shot), str(five_shot), "--data-root", str(tmp_path)]) == 0
    other_digest = json.loads(five_shot.read_text())["episodes"]["digest"]
    copied = tamper(one_shot, tmp_path, lambda r: r["episodes"].update(digest=other_digest))
    assert main(["validate", str(copied)]) == 0  # its own figures add up: only the data can tell
    capsys.readouterr()
    assert main(["validate", str(copied), "--data-root", str(tmp_path)]) == 1
    assert "$.episodes.digest" in capsys.readouterr().out


@pytest.mark.parametrize(("change", "where"), [
    (lambda r: r["episodes"].update(n_classes=999), "$.episodes.n_classes"),
    (lambda r: r["benchmark"].update(dataset_checksum="sha256:" + "0" * 64), "$.benchmark.dataset_checksum"),
    (lambda r: r["seeds"].update(episodes=r["seeds"]["episodes"] + 1), "$.episodes.digest"),
    (lambda r: r["benchmark"].update(name="no-such-benchmark"), "cannot re-derive the episodes: unknown benchmark"),
])
def test_claims_that_disagree_with_the_data_fail(embedded_results, tmp_path, capsys, change, where):
    path = tamper(embedded_results["5-way-1-shot-5-query"], tmp_path, change)
    assert main(["validate", str(path), "--data-root", str(tmp_path)]) == 1
    assert where in capsys.readouterr().out


def test_configuration_helper_matches_the_runner(embedded_results):
    result = json.loads(embedded_results["5-way-1-shot-5-query"].read_text())
    assert result["method"]["configuration"] == hashed_configuration("protonet", result["method"]["params"])


def test_submit_with_data_refuses_a_copied_digest(embedded_results, tmp_path, capsys):
    one_shot, five_shot = embedded_results["5-way-1-shot-5-query"], embedded_results["5-way-5-shot-5-query"]
    other_digest = json.loads(five_shot.read_text())["episodes"]["digest"]
    copied = tamper(one_shot, tmp_path, lambda r: r["episodes"].update(digest=other_digest))
    accepted = tmp_path / "accepted"
    assert main(["submit", str(copied), "--results-dir", str(accepted), "--data-root", str(tmp_path)]) == 1
    assert "$.episodes.digest" in capsys.readouterr().err
    assert not list(accepted.glob("*.json"))
