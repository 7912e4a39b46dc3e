"""Progress: plain lines (no carriage returns) when standard error is not a terminal."""

from __future__ import annotations

import os
import subprocess
import sys

from protobench.fewshot.progress import LineProgress, progress_bar

SUITE = """
name = "progress"
benchmarks = ["omniglot-subset"]
seeds = [0]
tests = [{ n_way = 5, n_shot = 1, n_query = 5, episodes = 64 }]

[[methods]]
label = "protonet"
method = "protonet"
train = { n_way = 5, n_shot = 1, n_query = 5, episodes = 20 }
"""


def test_a_run_logged_to_a_file_has_plain_lines_naming_the_unit(tmp_path):
    suite = tmp_path / "progress.toml"
    suite.write_text(SUITE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "protobench", "run", str(suite), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=600, check=True)
    assert "\r" not in run.stderr and "\r" not in run.stdout
    lines = run.stderr.splitlines()
    assert "train omniglot-subset__protonet__seed0: 20/20 ep" in "\n".join(lines)
    assert sum("train omniglot-subset__protonet__seed0:" in line for line in lines) <= 11  # a tenth at a time


def test_line_progress_prints_each_tenth_once(capsys):
    with LineProgress(total=100, desc="work", unit="ep", initial=30) as bar:
        for _ in range(70):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"work: {n}/100 ep" for n in range(40, 101, 10)]


def test_disabled_progress_prints_nothing(capsys):
    with progress_bar(10, "quiet", enabled=False) as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""
