"""docs/tuning/summary.py: the validation sweeps' tables come from the committed sweep files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_lists_every_sweep_file_by_accuracy(tmp_path):
    files = sorted((ROOT / "docs" / "tuning" / "results").glob("*/*.json"))
    assert files, "the committed validation sweep files are gone"
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "tuning" / "summary.py"), *map(str, files),
                           str(broken)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "broken.json: left out" in done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines()[2:]]
    assert len(rows) == len(files)
    results = [json.loads(path.read_text()) for path in files]
    assert {r[1] for r in rows} == {r["method"]["configuration"] for r in results}
    for result in results:
        name, configuration = "| " + result["benchmark"]["name"], result["method"]["configuration"]
        row = next(r for r in rows if r[0] == name and r[1] == configuration)
        assert row[2].startswith("val") and row[3] == f"{100 * result['metrics']['average_accuracy']['value']:.2f}"
    for benchmark in {r[0] for r in rows}:  # within a benchmark, best average accuracy first
        accuracies = [float(r[3]) for r in rows if r[0] == benchmark]
        assert accuracies == sorted(accuracies, reverse=True)
