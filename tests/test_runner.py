"""The runner end to end: resume after a kill, distributed equivalence, an external method."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from protobench.benchmarks.cli import main
from protobench.leaderboard.validate import validate_file

TINY_SUITE = """
name = "tiny"
description = "embedded Omniglot subset, a short training with a checkpoint every 10 episodes, validation every 40"
benchmarks = ["omniglot-subset"]
seeds = [0]
tests = [
  { n_way = 5, n_shot = 1, n_query = 15, episodes = 200 },
  { n_way = 5, n_shot = 5, n_query = 15, episodes = 200 },
]

[[methods]]
label = "protonet"
method = "protonet"
params = { lr_step = 100 }
train = { n_way = 5, n_shot = 5, n_query = 10, episodes = TRAIN_EPISODES, checkpoint_every = 10 }
val = { n_way = 5, n_shot = 1, n_query = 5, episodes = 10, every = 40 }
"""


def write_suite(folder: Path, train_episodes: int, validation: bool = True) -> Path:
    """The tiny suite; without ``validation`` it has no val table (checkpoints still every 10 episodes)."""
    path = folder / "tiny.toml"
    text = TINY_SUITE.replace("TRAIN_EPISODES", str(train_episodes))
    path.write_text(text if validation else text.replace("val = {", "# val = {"))
    return path


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "protobench", *args], capture_output=True, text=True,
                          env=env, check=check, timeout=600)


def results_of(folder: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


@pytest.mark.parametrize("validation", [True, False], ids=["with-val", "without-val"])
def test_killed_run_resumes_and_loses_nothing(tmp_path, validation):
    suite = write_suite(tmp_path, train_episodes=80, validation=validation)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "protobench", "run", str(suite), "--out", str(out), "--quiet",
               "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("checkpoints/*.partial.pt")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partials = list(out.glob("checkpoints/omniglot-subset__protonet__seed0__*.partial.pt"))
    assert len(partials) == 1, "the run never wrote a training checkpoint"
    partial = partials[0]
    assert not list(out.glob("*.json")), "killed during training, yet result files exist"

    run_cli("run", str(suite), "--out", str(out), "--quiet", "--threads", "1")  # resumes training
    resumed = results_of(out)
    assert len(resumed) == 2 and all(validate_file(out / name) == [] for name in resumed)
    assert not partial.exists()

    straight = tmp_path / "straight"
    run_cli("run", str(suite), "--out", str(straight), "--quiet", "--threads", "1")
    for name, result in results_of(straight).items():
        assert resumed[name]["evidence"] == result["evidence"], "resumed training differs from an uninterrupted one"

    # a lost result file is the only one rewritten
    first, second = sorted(resumed)
    (out / second).unlink()
    listing = run_cli("run", str(suite), "--out", str(out), "--threads", "1").stdout
    again = results_of(out)
    assert again[first]["run"]["id"] == resumed[first]["run"]["id"]
    assert again[second]["run"]["id"] != resumed[second]["run"]["id"]
    assert again[second]["evidence"] == resumed[second]["evidence"]
    assert "2 result files" in listing


def test_two_processes_give_the_single_process_results(tmp_path):
    suite = write_suite(tmp_path, train_episodes=20)
    distributed, single = tmp_path / "distributed", tmp_path / "single"
    run_cli("run", str(suite), "--out", str(distributed), "--nproc", "2", "--quiet", "--threads", "1")
    shutil.copytree(distributed / "checkpoints", single / "checkpoints")  # the same trained weights
    run_cli("run", str(suite), "--out", str(single), "--quiet", "--threads", "1")
    two, one = results_of(distributed), results_of(single)
    assert sorted(two) == sorted(one) and len(one) == 2
    for name in one:
        assert two[name]["budget"]["processes"] == 2 and one[name]["budget"]["processes"] == 1
        assert two[name]["episodes"]["digest"] == one[name]["episodes"]["digest"]
        assert two[name]["evidence"] == one[name]["evidence"]


def test_external_method_found_through_its_entry_point(tmp_path):
    try:
        distribution("protobench-example-method")
    except PackageNotFoundError:
        reason = "tests/example_method is not installed (pip install ./tests/example_method)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert "raw-pixels" in run_cli("ls").stdout
    out = tmp_path / "external"
    assert main(["run", "quick", "--methods", "raw-pixels", "--out", str(out), "--quiet"]) == 0
    results = results_of(out)
    assert len(results) == 2
    for name, result in results.items():
        assert validate_file(out / name) == []
        assert result["method"]["name"] == "raw-pixels" and result["budget"]["train_episodes"] == 0
        assert result["metrics"]["mean_accuracy"]["value"] > 0.3  # 5-way chance is 0.2
