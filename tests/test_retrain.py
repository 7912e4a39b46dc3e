"""The paper's two-stage protocol: choose the episode count on val, retrain on train+val for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protobench.benchmarks.cli import main
from protobench.leaderboard.validate import validate_file

SUITE = """
name = "two-stage"
benchmarks = ["BENCHMARK"]
seeds = [0]
tests = [{ n_way = 5, n_shot = 1, n_query = 5, episodes = 64 }]

[[methods]]
label = "protonet-2stage"
method = "protonet"
params = { lr_step = 100 }
train = { n_way = 5, n_shot = 1, n_query = 5, episodes = 20, checkpoint_every = 5 }
VAL
retrain = "trainval"
"""
VAL = "val = { n_way = 5, n_shot = 1, n_query = 5, episodes = 10, every = 10 }"


def write(folder: Path, benchmark: str = "omniglot-subset", val: str = VAL) -> Path:
    path = folder / "suite.toml"
    path.write_text(SUITE.replace("BENCHMARK", benchmark).replace("VAL", val))
    return path


def test_stage_two_retrains_on_trainval_for_the_count_chosen_on_val(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path)), "--out", str(out), "--quiet"]) == 0
    [path] = out.glob("*.json")
    assert validate_file(path) == []
    training = json.loads(path.read_text())["training"]
    stage1 = training["stage1"]
    validated = [point for point in stage1["curve"] if "val_accuracy" in point]
    assert [point["episode"] for point in validated] == [10, 20]
    best = max(validated, key=lambda point: point["val_accuracy"])["episode"]
    assert training["stage"] == "retrain" and training["train_split"] == "trainval"
    assert training["chosen_on"] == "val" and training["chosen_episodes"] == best == stage1["selected_episode"]
    assert training["curve"][-1]["episode"] == best and "val_accuracy" not in training["curve"][-1]
    assert json.loads(path.read_text())["method"]["params"]["retrain"] == "trainval"
    assert not list((out / "checkpoints").glob("*.stage1.json")) and not list(out.glob("checkpoints/*partial*"))


@pytest.mark.parametrize(("benchmark_name", "val", "message"), [
    ("omniglot-subset", "", "retrain: a split name"),
    ("digits-heldout", VAL, "no val split"),
])
def test_a_retrain_the_benchmark_cannot_serve_exits_2(tmp_path, capsys, benchmark_name, val, message):
    assert main(["run", str(write(tmp_path, benchmark_name, val)), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
