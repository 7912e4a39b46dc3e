"""The ``protobench`` command line end to end on the embedded digits suite."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.cli import main
from leaderboard.validate import validate_file


def test_run_quick_writes_valid_results_and_reuses_trained_weights(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["run", "quick", "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    files = sorted(out.glob("*.json"))
    assert len(files) == 2 and "5-way 1-shot" in table and "5-way 5-shot" in table
    assert all(validate_file(f) == [] for f in files)
    first = {f.name: json.loads(f.read_text()) for f in files}
    assert (out / "checkpoints" / "digits-protonet-5shot.final.pt").is_file()

    assert main(["run", "quick", "--out", str(out), "--quiet"]) == 0  # trained weights are reused
    for name, result in first.items():
        again = json.loads((out / name).read_text())
        assert again["episodes"]["digest"] == result["episodes"]["digest"]
        assert again["evidence"] == result["evidence"]


def test_usage_errors_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PROTOBENCH_DATA", raising=False)
    assert main(["run", "no-such-suite", "--out", str(tmp_path)]) == 2
    assert main(["run", "omniglot", "--out", str(tmp_path)]) == 2
    assert main(["run", "omniglot", "--out", str(tmp_path), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown suite" in err and "--data-root" in err and "cannot load" in err


def test_console_script_lists_suites():
    listing = subprocess.run([sys.executable, "-m", "benchmarks.cli", "ls"], capture_output=True, text=True, check=True)
    assert "quick" in listing.stdout and "omniglot-protonet-5shot" in listing.stdout
