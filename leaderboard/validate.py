"""Check result files: schema conformance, then every derived figure against the raw evidence.

A problem is reported as ``"<JSON path>: <message>"`` (for example
``"$.metrics.ci95.value: 0.0120 does not match 0.0113 recomputed from the evidence"``). Nothing in
a file is executed; only JSON is parsed.
"""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from fewshot.metrics import mean_ci95
from leaderboard.schema import result_schema

MAX_FILE_BYTES = 64 * 2**20
TOLERANCE = 1e-9  # absolute, on accuracies in [0, 1]: rounding, nothing more


def json_path(parts) -> str:
    """``['a', 0, 'b']`` -> ``$.a[0].b``."""
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def recomputed_metrics(result: dict) -> dict[str, float]:
    """Mean accuracy and 95% CI half-width from ``evidence.per_episode_accuracy``."""
    mean, ci95 = mean_ci95(result["evidence"]["per_episode_accuracy"])
    return {"mean_accuracy": mean, "ci95": ci95}


def validate_result(result) -> list[str]:
    """Problems with a parsed result file; an empty list means it is valid."""
    validator = Draft202012Validator(result_schema())
    problems = [f"{json_path(error.absolute_path)}: {error.message}"
                for error in sorted(validator.iter_errors(result), key=lambda e: list(map(str, e.absolute_path)))]
    if problems:
        return problems
    n_values = len(result["evidence"]["per_episode_accuracy"])
    if result["episodes"]["n"] != n_values:
        problems.append(f"$.episodes.n: {result['episodes']['n']} episodes claimed but "
                        f"$.evidence.per_episode_accuracy holds {n_values}")
    for name, value in recomputed_metrics(result).items():
        claimed = result["metrics"][name]["value"]
        if not abs(claimed - value) <= TOLERANCE:
            problems.append(f"$.metrics.{name}.value: {claimed!r} does not match {value!r} "
                            "recomputed from the evidence")
    return problems


def validate_file(path: str | Path) -> list[str]:
    """Problems with the result file at ``path`` (unreadable, not JSON, or invalid)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return [f"$: file is larger than {MAX_FILE_BYTES // 2**20} MiB"]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [f"$: cannot read file: {error}"]
    try:
        result = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        return [f"$: not valid JSON: {error}"]
    return validate_result(result)
