"""Accepting result files into a leaderboard's results folder under content-addressed names.

The accepted files belong to a leaderboard repository, never to the installed package: the
default folder is ``./leaderboard/results`` of the working directory, and only when that folder
already exists (the command runs in a checkout of a leaderboard repository). Anywhere else the
caller must name the folder (``protobench submit --results-dir DIR``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from protobench.leaderboard.validate import validate_file

CHECKOUT_RESULTS_DIR = Path("leaderboard", "results")
"""Where a leaderboard repository keeps its accepted files, relative to the repository root."""


class SubmissionError(ValueError):
    """A file that cannot be accepted, with the reasons."""


def accepted_name(result: dict, content: bytes) -> str:
    """``<benchmark>__<method>__<protocol>__<sha256 of the bytes, 16 hex>.json``."""
    protocol = result["benchmark"].get("protocol", result["kind"]).replace(" ", "").replace("-", "")
    digest = hashlib.sha256(content).hexdigest()[:16]
    return f"{result['benchmark']['name']}__{result['method']['name']}__{protocol}__{digest}.json"


def default_results_dir(cwd: str | Path | None = None) -> Path | None:
    """``<cwd>/leaderboard/results`` when that folder exists, else None (the caller must name one).

    ``cwd`` defaults to the working directory; the returned path is relative when ``cwd`` is None.
    """
    folder = CHECKOUT_RESULTS_DIR if cwd is None else Path(cwd) / CHECKOUT_RESULTS_DIR
    return folder if folder.is_dir() else None


def submit(path: str | Path, results_dir: str | Path) -> Path:
    """Validate ``path`` and copy it into ``results_dir``; return the accepted file's path.

    Raises SubmissionError for an invalid file, for a file whose bytes are already accepted,
    and for a file whose run id is already accepted under another name. ``results_dir`` is
    created when missing; nothing is written anywhere else.
    """
    results_dir = Path(results_dir)
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
