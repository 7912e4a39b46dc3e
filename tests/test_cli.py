"""The ``protobench`` command line: run, compare, submit, usage errors."""

from __future__ import annotations

import copy
import json

import pytest

from protobench.benchmarks.cli import main
from protobench.leaderboard.validate import validate_file


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("quick")
    assert main(["run", "quick", "--out", str(out), "--quiet"]) == 0
    return {p.name: p for p in sorted(out.glob("*.json"))}


def test_run_quick_writes_valid_results_and_reuses_them(quick_results, capsys):
    assert len(quick_results) == 2
    assert all(validate_file(path) == [] for path in quick_results.values())
    out = next(iter(quick_results.values())).parent
    assert (out / "checkpoints" / "digits-heldout__protonet__seed0.final.pt").is_file()
    before = {name: json.loads(path.read_text()) for name, path in quick_results.items()}
    assert main(["run", "quick", "--out", str(out), "--quiet"]) == 0  # everything exists: nothing recomputed
    table = capsys.readouterr().out
    assert "5-way 1-shot 15-query" in table and "5-way 5-shot 15-query" in table
    for name, path in quick_results.items():
        assert json.loads(path.read_text())["run"]["id"] == before[name]["run"]["id"]


def test_run_builds_a_page_and_leaderboard_build_works(quick_results, tmp_path):
    out = next(iter(quick_results.values())).parent
    assert "protonet" in (out / "site" / "index.html").read_text()
    site = tmp_path / "site"
    assert main(["leaderboard", "build", "--results-dir", str(out), "--out", str(site)]) == 0
    assert (site / "index.html").is_file() and "| protonet" in (site / "leaderboard.md").read_text()


def test_compare_pairs_identical_episodes_and_refuses_others(quick_results, tmp_path, capsys):
    one_shot, five_shot = (quick_results[n] for n in sorted(quick_results))
    other = copy.deepcopy(json.loads(one_shot.read_text()))
    other["method"]["name"] = "shifted"
    other["evidence"]["per_episode_accuracy"] = [max(0.0, a - 0.1) for a in other["evidence"]["per_episode_accuracy"]]
    values = other["evidence"]["per_episode_accuracy"]
    from protobench.fewshot.metrics import mean_ci95

    other["metrics"]["mean_accuracy"]["value"], other["metrics"]["ci95"]["value"] = mean_ci95(values)
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(other))
    assert main(["compare", str(one_shot), str(shifted)]) == 0
    out = capsys.readouterr().out
    assert "significant" in out and "+" in out
    assert main(["compare", str(one_shot), str(five_shot)]) == 1
    assert "episode digests differ" in capsys.readouterr().err


def test_submit_accepts_once_and_refuses_invalid(quick_results, tmp_path, capsys):
    accepted = tmp_path / "accepted"
    path = next(iter(quick_results.values()))
    assert main(["submit", str(path), "--results-dir", str(accepted)]) == 0
    files = list(accepted.glob("*.json"))
    assert len(files) == 1 and files[0].read_bytes() == path.read_bytes()
    assert main(["submit", str(path), "--results-dir", str(accepted)]) == 1
    tampered = tmp_path / "tampered.json"
    result = json.loads(path.read_text())
    result["metrics"]["mean_accuracy"]["value"] = 0.999
    tampered.write_text(json.dumps(result))
    assert main(["submit", str(tampered), "--results-dir", str(accepted)]) == 1
    err = capsys.readouterr().err
    assert "already accepted" in err and "$.metrics.mean_accuracy.value" in err
    assert len(list(accepted.glob("*.json"))) == 1


def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PROTOBENCH_DATA", raising=False)
    assert main(["run", "no-such-suite", "--out", str(tmp_path)]) == 2
    assert main(["run", "omniglot", "--out", str(tmp_path)]) == 2
    assert main(["run", "quick", "--methods", "no-such-method", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown suite" in err and "--data-root" in err and "unknown method" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["run"])
    assert exit_info.value.code == 2
