"""docs/omniglot_curves.py: the README's curve data and plot come from the result files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_curves_are_the_result_files_validation_points(tmp_path):
    files = sorted((ROOT / "leaderboard" / "results").glob("omniglot__*1shot*.json"))
    assert files, "the committed Omniglot result files are gone"
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "omniglot_curves.py"), *map(str, files), "--out",
                           str(tmp_path / "curves")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "curves.csv", encoding="utf-8")))
    training = json.loads(files[0].read_text())["training"]
    curve = [p for p in training.get("stage1", training)["curve"] if p.get("val_accuracy") is not None]
    assert [int(r["episode"]) for r in rows] == [p["episode"] for p in curve]
    assert [float(r["val_accuracy"]) for r in rows] == [round(p["val_accuracy"], 6) for p in curve]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
