"""docs/clip_protocol_table.py: the README's CLIP-protocol tables come from the committed result files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "protoclip-clip-protocol"
SCRIPT = ROOT / "docs" / "clip_protocol_table.py"


def run(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, files)], capture_output=True, text=True, timeout=300)


def row(output: str, name: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_cells_are_the_mean_over_draws_and_differences_are_paired():
    files = sorted(RESULTS.glob("*.json"))
    assert len(files) >= 25, "the committed CLIP-protocol result files are gone"
    done = run(*files)
    assert done.returncode == 0, done.stderr
    proto = json.loads(next(RESULTS.glob("*__proto-clip-offline-4shot__*.json")).read_text())
    protonet = json.loads(next(RESULTS.glob("*__protonet-frozen-offline__20-way-4-shot-*.json")).read_text())
    a = 100 * np.asarray(proto["evidence"]["per_episode_accuracy"])
    b = 100 * np.asarray(protonet["evidence"]["per_episode_accuracy"])
    assert row(done.stdout, "Proto-CLIP (training-free)")[2] == f"{a.mean():.2f} ± {a.std(ddof=1):.2f}"
    difference = a - b
    half = 4.303 * difference.std(ddof=1) / np.sqrt(3)
    assert row(done.stdout, "B: ProtoNet on the frozen image features")[2].startswith(
        f"{difference.mean():+.2f} ± {half:.2f}")


def test_refuses_an_invalid_or_tampered_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": "1.2.0"}')
    done = run(bad)
    assert done.returncode != 0 and "not a valid result file" in done.stderr
    source = next(RESULTS.glob("*__protonet-frozen-offline__20-way-8-shot-*.json"))
    tampered = json.loads(source.read_text())
    tampered["evidence"]["per_episode_accuracy"][0] = 1.0  # no longer what its metrics say
    (tmp_path / source.name).write_text(json.dumps(tampered))
    done = run(tmp_path / source.name)
    assert done.returncode != 0 and "not a valid result file" in done.stderr
