"""docs/prd_diagnostics.py: the README's PRD diagnostics come from the result files' training records."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_is_the_mean_over_seeds_of_the_recorded_terms(tmp_path):
    files = sorted((ROOT / "leaderboard" / "results").glob("split-fmnist__prd-no-distill__*.json"))
    assert len(files) == 3, "the committed PRD ablation result files are gone"
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "prd_diagnostics.py"), *map(str, files), "--out",
                           str(tmp_path / "diagnostics")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(tmp_path / "diagnostics.csv", encoding="utf-8")))
    results = [json.loads(file.read_text()) for file in files]
    assert [int(row["experience"]) for row in rows] == [1, 2, 3, 4, 5]
    for i, row in enumerate(rows):
        supcon = statistics.mean(r["training"]["experiences"][i]["supcon"] for r in results)
        assert float(row["supcon"]) == float(f"{supcon:.4g}")
        new = statistics.mean(100 * r["evidence"]["accuracy_matrix"][i][i] for r in results)
        assert float(row["new_accuracy"]) == float(f"{new:.4g}")
        assert row["distill"] == ""  # distill_coef 0: never computed
    assert rows[0]["old_accuracy"] == "" and float(rows[1]["prototype_drift"]) < 1e-6  # old prototypes untouched
    assert (tmp_path / "diagnostics.png").stat().st_size > 10_000
