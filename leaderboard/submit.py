"""Accepting result files into ``leaderboard/results/`` under content-addressed names."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from protobench.leaderboard.validate import validate_file

RESULTS_DIR = Path(__file__).with_name("results")


class SubmissionError(ValueError):
    """A file that cannot be accepted, with the reasons."""


def accepted_name(result: dict, content: bytes) -> str:
    """``<benchmark>__<method>__<protocol>__<sha256 of the bytes, 16 hex>.json``."""
    protocol = result["benchmark"].get("protocol", result["kind"]).replace(" ", "").replace("-", "")
    digest = hashlib.sha256(content).hexdigest()[:16]
    return f"{result['benchmark']['name']}__{result['method']['name']}__{protocol}__{digest}.json"


def submit(path: str | Path, results_dir: Path = RESULTS_DIR) -> Path:
    """Validate ``path`` and copy it into ``results_dir``; return the accepted file's path.

    Raises SubmissionError for an invalid file, for a file whose bytes are already accepted,
    and for a file whose run id is already accepted under another name.
    """
    problems = validate_file(path)
    if problems:
        raise SubmissionError(f"{path} failed validation:\n  " + "\n  ".join(problems))
    content = Path(path).read_bytes()
    result = json.loads(content)
    target = results_dir / accepted_name(result, content)
    if target.exists():
        raise SubmissionError(f"{path} is already accepted as {target}")
    for other in results_dir.glob("*.json"):
        try:
            same_run = json.loads(other.read_text())["run"]["id"] == result["run"]["id"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if same_run:
            raise SubmissionError(f"{path} has the run id of the accepted {other.name}; a run is accepted once")
    results_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(path, partial)
    partial.replace(target)
    return target
