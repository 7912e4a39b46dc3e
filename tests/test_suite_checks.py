"""Suites are checked before any data loads; keys, identity and resume follow the configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from protobench.benchmarks import registry
from protobench.benchmarks.cli import main
from protobench.benchmarks.suite import load_suite
from protobench.fewshot import EpisodeSampler
from protobench.fewshot.counter_rng import role_key
from protobench.fewshot.datasets import load_omniglot_subset
from protobench.fewshot.episodes import spec_from_dict
from protobench.leaderboard.validate import validate_file

SUITE = """
name = "checked"
benchmarks = ["BENCHMARK"]
seeds = [0]
tests = [TESTS]

[[methods]]
label = "LABEL"
method = "protonet"
EXTRA
"""
SMALL_TEST = "{ n_way = 5, n_shot = 1, n_query = 5, episodes = 64 }"


def write(folder: Path, benchmark: str = "omniglot-subset", tests: str = SMALL_TEST, extra: str = "",
          label: str = "protonet", name: str = "suite.toml") -> Path:
    path = folder / name
    path.write_text(SUITE.replace("BENCHMARK", benchmark).replace("TESTS", tests).replace("EXTRA", extra)
                    .replace("LABEL", label))
    return path


@pytest.fixture
def loaders_must_not_run(monkeypatch):
    """Fail the test if any benchmark's data is loaded."""
    def refuse(data_root):
        raise AssertionError("data was loaded although the suite is invalid")

    for name, benchmark in registry.benchmarks().items():
        monkeypatch.setitem(registry._benchmarks, name, type(benchmark)(**{**benchmark.__dict__, "loader": refuse}))


@pytest.mark.parametrize(("benchmark_name", "tests", "extra", "message"), [
    ("digits-heldout", "{ n_way = 10, n_shot = 1, n_query = 15, episodes = 100 }", "",
     "test 10-way-1-shot-15-query needs 10-way episodes but the test split has 5 classes"),
    ("omniglot-subset", "{ n_way = 5, n_shot = 10, n_query = 15, episodes = 100 }", "",
     "needs 25 examples per class but the smallest test class has 20"),
    ("omniglot-subset", "{ n_way = 5, n_shot = 1, n_quer = 15, episodes = 100 }", "", "unknown key(s) n_quer"),
    ("omniglot-subset", SMALL_TEST, "trian = { n_way = 5, n_shot = 1, n_query = 5, episodes = 10 }",
     "unknown key(s) trian"),
    ("omniglot-subset", SMALL_TEST, "params = { lr_stpe = 10 }", "do not fit the method's factory"),
    ("digits-heldout", SMALL_TEST, "val = { n_way = 5, n_shot = 1, n_query = 5, episodes = 10 }",
     "the benchmark has no val split"),
    ("mini-imagenet", SMALL_TEST, "train = { n_way = 5, n_shot = 1, n_query = 5, episodes = 10 }",
     "has no train split"),
    ("omniglott", SMALL_TEST, "", "did you mean 'omniglot'"),
])
def test_bad_suites_exit_2_before_any_data_loads(tmp_path, capsys, loaders_must_not_run, benchmark_name, tests,
                                                  extra, message):
    suite = write(tmp_path, benchmark_name, tests, extra)
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--data-root", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_dataset_folder_is_found_before_loading(tmp_path, capsys, loaders_must_not_run):
    suite = write(tmp_path, "omniglot")
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--data-root", str(tmp_path)]) == 2
    assert f"{tmp_path / 'omniglot'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:7", "tpu"])
def test_devices_that_do_not_exist_exit_2(tmp_path, capsys, loaders_must_not_run, device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that CUDA device")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["run", str(write(tmp_path)), "--out", str(tmp_path / "out"), "--device", device]) == 2
    assert f"--device {device}" in capsys.readouterr().err


def test_one_canonical_spec_key_names_files_protocols_and_listings(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path)), "--out", str(out), "--quiet"]) == 0
    [path] = out.glob("*.json")
    result = json.loads(path.read_text())
    assert path.name == "omniglot-subset__protonet__5-way-1-shot-5-query__seed0.json"
    assert result["benchmark"]["protocol"] == "5-way-1-shot-5-query"
    assert main(["ls"]) == 0
    assert "test 5-way-1-shot-15-query, 5-way-5-shot-15-query" in capsys.readouterr().out


def test_role_keys_are_recorded_and_re_derive_the_test_episodes(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path)), "--out", str(out), "--quiet", "--seeds", "7"]) == 0
    [path] = out.glob("*.json")
    result = json.loads(path.read_text())
    assert result["seeds"] == {"seed": 7, "train": role_key("train", 7), "val": role_key("val", 7),
                               "episodes": role_key("test", 7), "init": role_key("init", 7)}
    assert len({result["seeds"][role] for role in ("train", "val", "episodes", "init")}) == 4
    sampler = EpisodeSampler(load_omniglot_subset("test"), spec_from_dict(result["benchmark"]["episode_spec"]),
                             seed=result["seeds"]["episodes"], n_episodes=result["episodes"]["n"])
    assert sampler.digest() == result["episodes"]["digest"]


def test_a_variable_meta_dataset_spec_runs_end_to_end(tmp_path):
    tests = '{ kind = "variable", max_way = 10, max_query = 5, episodes = 20 }'
    extra = ('train = { kind = "variable", max_way = 10, max_query = 5, episodes = 3 }\n'
             'val = { kind = "variable", max_way = 10, max_query = 5, episodes = 4, every = 3 }')
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, tests=tests, extra=extra)), "--out", str(out), "--quiet"]) == 0
    [path] = out.glob("*.json")
    assert validate_file(path) == []
    result = json.loads(path.read_text())
    assert result["benchmark"]["protocol"] == "variable-5-10-way-5-query-500-support-100-per-class"
    assert result["benchmark"]["episode_spec"]["kind"] == "variable" and result["episodes"]["n"] == 20
    assert [point["episode"] for point in result["training"]["curve"]] == [3]


def test_resume_recomputes_results_of_another_configuration(tmp_path):
    out = tmp_path / "out"
    first = write(tmp_path, extra="params = { lr_step = 100 }\ntrain = { n_way = 5, n_shot = 1, n_query = 5, "
                                  "episodes = 2 }")
    assert main(["run", str(first), "--out", str(out), "--quiet"]) == 0
    [path] = out.glob("*.json")
    before = json.loads(path.read_text())
    assert main(["run", str(first), "--out", str(out), "--quiet"]) == 0  # same configuration: reused
    assert json.loads(path.read_text())["run"]["id"] == before["run"]["id"]
    changed = write(tmp_path, extra="params = { lr_step = 50 }\ntrain = { n_way = 5, n_shot = 1, n_query = 5, "
                                    "episodes = 2 }", name="changed.toml")
    assert main(["run", str(changed), "--out", str(out), "--quiet"]) == 0  # same file name, new configuration
    after = json.loads(path.read_text())
    assert after["run"]["id"] != before["run"]["id"]
    assert after["run"]["config_hash"] != before["run"]["config_hash"]
    assert after["method"]["configuration"] != before["method"]["configuration"]
    assert len(list((out / "checkpoints").glob("*.final.pt"))) == 2  # weights of one never reused for the other


def test_the_thread_count_is_part_of_the_unit(tmp_path):
    out, threads = tmp_path / "out", torch.get_num_threads()
    try:
        assert main(["run", str(write(tmp_path)), "--out", str(out), "--quiet", "--threads", "1"]) == 0
        [path] = out.glob("*.json")
        one = json.loads(path.read_text())
        assert main(["run", str(write(tmp_path)), "--out", str(out), "--quiet", "--threads", "2"]) == 0
        two = json.loads(path.read_text())
    finally:
        torch.set_num_threads(threads)
    assert one["environment"]["threads"] == 1 and two["environment"]["threads"] == 2
    assert one["run"]["config_hash"] != two["run"]["config_hash"]


def test_a_label_is_the_configuration_and_unlabelled_params_are_hashed(tmp_path):
    labelled = load_suite(write(tmp_path, label="my-protonet"))
    assert labelled.methods[0].label == "my-protonet"
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, label="my-protonet")), "--out", str(out), "--quiet"]) == 0
    [path] = out.glob("*.json")
    assert json.loads(path.read_text())["method"]["configuration"] == "my-protonet"


def test_an_unknown_suite_gets_a_did_you_mean(capsys):
    assert main(["run", "quikc"]) == 2
    assert "unknown suite 'quikc' (did you mean 'quick'?)" in capsys.readouterr().err


def test_a_closed_pipe_is_not_a_traceback():
    """`protobench ls | head -1`: the reader has gone before ls writes; no traceback, exit 0."""
    import subprocess
    import sys

    listing = subprocess.Popen([sys.executable, "-m", "protobench", "ls"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    listing.stdout.close()  # the reader goes away before anything is written
    stderr = listing.stderr.read().decode()
    assert listing.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr
