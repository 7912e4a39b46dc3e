"""The ``protobench`` command line: run, compare, submit, usage errors, help, version, the torchrun relaunch."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import protobench
from protobench.benchmarks import cli
from protobench.benchmarks.cli import build_parser, main, torchrun_command, torchrun_environment, without_nproc
from protobench.fewshot.metrics import mean_ci95
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
    assert len(list((out / "checkpoints").glob("omniglot-subset__protonet__seed0__*.final.pt"))) == 1
    before = {name: json.loads(path.read_text()) for name, path in quick_results.items()}
    assert main(["run", "quick", "--out", str(out), "--quiet"]) == 0  # everything exists: nothing recomputed
    table = capsys.readouterr().out
    assert "5-way-1-shot-15-query" in table and "5-way-5-shot-15-query" in table
    for name, path in quick_results.items():
        assert json.loads(path.read_text())["run"]["id"] == before[name]["run"]["id"]


def test_run_builds_a_page_and_leaderboard_build_works(quick_results, tmp_path):
    out = next(iter(quick_results.values())).parent
    assert "protonet" in (out / "site" / "index.html").read_text()
    site = tmp_path / "site"
    assert main(["leaderboard", "build", "--results-dir", str(out), "--out", str(site)]) == 0
    assert (site / "index.html").is_file() and "| protonet" in (site / "leaderboard.md").read_text()


def _variant(path: Path, folder: Path, name: str, accuracies: list[float]) -> Path:
    """A valid copy of the result at ``path``, as method ``name`` with these per-episode accuracies."""
    result = copy.deepcopy(json.loads(path.read_text()))
    result["method"]["name"] = result["method"]["configuration"] = name
    result["evidence"]["per_episode_accuracy"] = accuracies
    result["metrics"]["mean_accuracy"]["value"], result["metrics"]["ci95"]["value"] = mean_ci95(accuracies)
    target = folder / f"{name}.json"
    target.write_text(json.dumps(result))
    assert validate_file(target) == []
    return target


def _printed_mean(accuracies: list[float]) -> str:
    mean, ci95 = mean_ci95(accuracies)
    return f"{100 * mean:6.2f} +- {100 * ci95:.2f} %"


def test_compare_pairs_identical_episodes_and_refuses_others(quick_results, tmp_path, capsys):
    one_shot, five_shot = (quick_results[n] for n in sorted(quick_results))
    accuracies = json.loads(one_shot.read_text())["evidence"]["per_episode_accuracy"]
    lower = [max(0, round(a * 75) - 8) / 75 for a in accuracies]  # 8 fewer of the 75 queries right
    shifted = _variant(one_shot, tmp_path, "shifted", lower)
    assert main(["compare", str(one_shot), str(shifted)]) == 0
    out = capsys.readouterr().out
    assert _printed_mean(accuracies) in out and _printed_mean(lower) in out  # both means with their CIs
    verdict = re.search(r"A - B over 1000 identical episodes: ([+-]\d+\.\d\d) \+- \d+\.\d\d points "
                        r"\(paired 95% CI; (significant|not significant)\)", out)
    assert verdict is not None, out
    assert float(verdict[1]) > 5 and verdict[2] == "significant"  # B is 8/75 lower on every episode it can be
    assert main(["compare", str(one_shot), str(five_shot)]) == 1
    assert "episode digests differ" in capsys.readouterr().err


def test_compare_says_not_significant_when_only_the_pairing_differs(quick_results, tmp_path, capsys):
    """The same accuracies in reverse episode order: equal means, a difference of zero, not significant."""
    one_shot = quick_results[sorted(quick_results)[0]]
    accuracies = json.loads(one_shot.read_text())["evidence"]["per_episode_accuracy"]
    assert accuracies != accuracies[::-1]
    reordered = _variant(one_shot, tmp_path, "reordered", accuracies[::-1])
    assert main(["compare", str(one_shot), str(reordered)]) == 0
    out = capsys.readouterr().out
    assert out.count(_printed_mean(accuracies)) == 2
    assert re.search(r"A - B over 1000 identical episodes: [+-]0\.00 \+- \d+\.\d\d points "
                     r"\(paired 95% CI; not significant\)", out), out


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


def test_a_param_value_the_method_refuses_exits_2_with_its_reason(tmp_path, capsys):
    suite = tmp_path / "bad-value.toml"
    suite.write_text('name = "bad-value"\nbenchmarks = ["omniglot-subset"]\n'
                     'tests = [{ n_way = 5, n_shot = 1, n_query = 3, episodes = 20 }]\n'
                     '[[methods]]\nmethod = "protonet"\nparams = { lr = -1.0 }\n'
                     'train = { n_way = 5, n_shot = 1, n_query = 3, episodes = 10 }\n')
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "method 'protonet': need lr > 0" in err and "Traceback" not in err


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"protobench {protobench.__version__}\n"


def _verb_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(argv prefix, parser) of every verb, nested verbs (``leaderboard build``) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _verb_parsers(sub, (*path, name))


EXPECTED_HELP = {  # words each verb's description must contain: what it does, its inputs, its outputs
    ("ls",): ["suites", "benchmarks", "methods", "prints"],
    ("run",): ["SUITE", "result JSON", "OUT/checkpoints", "OUT/site", "--data-root", "resumes"],
    ("validate",): ["FILE", "JSON Schema", "recompute", "INVALID", "writes nothing"],
    ("compare",): ["A and B", "identical episodes", "mean accuracy", "95% CI", "significant", "writes nothing"],
    ("submit",): ["FILE", "results folder", "content-addressed", "Refuses"],
    ("leaderboard",): ["build"],
    ("leaderboard", "build"): ["results folder", "OUT/index.html", "OUT/leaderboard.md"],
}


def test_every_verb_has_a_help_description(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps help at the terminal width, also at hyphens
    verbs = dict(_verb_parsers(build_parser()))
    assert set(verbs) == set(EXPECTED_HELP)
    for path, words in EXPECTED_HELP.items():
        command = f"protobench {' '.join(path)}"
        assert verbs[path].description, f"`{command}` has no description"
        with pytest.raises(SystemExit):
            main([*path, "--help"])
        text = capsys.readouterr().out
        for word in words:
            assert word.lower() in text.lower(), f"`{command} --help` does not mention {word!r}:\n{text}"


@pytest.mark.parametrize("argv", [
    ["run", "quick", "--nproc", "2", "--out", "x"],
    ["run", "quick", "--nproc=2", "--out", "x"],
    ["run", "--nproc=2", "quick", "--out", "x"],
    ["run", "quick", "--np", "2", "--out", "x"],
    ["run", "quick", "--npr=2", "--out", "x"],
])
def test_torchrun_relaunch_drops_nproc_in_every_spelling(argv):
    assert build_parser().parse_args(argv).nproc == 2
    assert torchrun_command(argv, 2) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc-per-node=2", "-m", "protobench", "run", "quick", "--out", "x"]


def test_without_nproc_keeps_other_options_and_everything_after_a_double_dash():
    argv = ["run", "my--nproc.toml", "--out=--nproc", "--nproc=3", "--", "--nproc", "4"]
    assert without_nproc(argv) == ["run", "my--nproc.toml", "--out=--nproc", "--", "--nproc", "4"]


def test_launch_torchrun_runs_the_command_without_nproc(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    argv = ["run", "quick", "--nproc=2", "--quiet", "--out", "x"]
    assert cli._launch_torchrun(argparse.Namespace(argv=argv, nproc=2, threads=0, quiet=True)) == 0
    [(command, env)] = calls
    assert command[command.index("protobench"):] == ["protobench", "run", "quick", "--quiet", "--out", "x"]
    assert env["OMP_NUM_THREADS"] == "1" and env["LOGLEVEL"] == "ERROR"


def test_torchrun_environment_sets_threads_and_quiets_only_when_asked():
    base = {"PATH": "/bin"}
    assert torchrun_environment(base) == {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    assert torchrun_environment({**base, "OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
    assert torchrun_environment({**base, "OMP_NUM_THREADS": "3"}, threads=2)["OMP_NUM_THREADS"] == "2"
    quiet = torchrun_environment(base, quiet=True)
    assert quiet["LOGLEVEL"] == "ERROR" and quiet["TORCH_CPP_LOG_LEVEL"] == "ERROR"
    assert base == {"PATH": "/bin"}


def test_quiet_torchrun_launch_prints_no_banner(tmp_path):
    """The real torchrun, two processes, each running ``protobench --version``: nothing on stderr."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOGLEVEL", "TORCH_CPP_LOG_LEVEL")}
    command = torchrun_command(["--version"], 2)
    quiet = subprocess.run(command, env=torchrun_environment(clean, quiet=True), cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines() == [f"protobench {protobench.__version__}"] * 2
    assert quiet.stderr == ""
    plain = subprocess.run(command, env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "OMP_NUM_THREADS" in plain.stderr  # what the quiet environment suppresses


def _accepted_files() -> dict[str, bytes]:
    folder = Path(cli.__file__).parents[1] / "leaderboard" / "results"
    return {p.name: p.read_bytes() for p in folder.glob("*")} if folder.is_dir() else {}


def test_submit_and_build_default_to_the_checkouts_leaderboard_results(quick_results, tmp_path, monkeypatch):
    (tmp_path / "leaderboard" / "results").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    path = quick_results[sorted(quick_results)[0]]
    assert main(["submit", str(path)]) == 0
    [accepted] = (tmp_path / "leaderboard" / "results").glob("*.json")
    assert accepted.read_bytes() == path.read_bytes()
    assert main(["leaderboard", "build"]) == 0
    assert "| protonet" in (tmp_path / "leaderboard" / "site" / "leaderboard.md").read_text()


@pytest.mark.parametrize("verb", [["submit"], ["leaderboard", "build"]])
def test_results_dir_is_required_outside_a_leaderboard_checkout(verb, quick_results, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _accepted_files()
    files = [str(quick_results[sorted(quick_results)[0]])] if verb == ["submit"] else []
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, *files])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--results-dir is required" in err and "leaderboard/results" in err
    assert list(tmp_path.iterdir()) == [] and _accepted_files() == before
