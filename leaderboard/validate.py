"""Check result files: schema conformance, then every derived figure against the raw evidence.

A problem is reported as ``"<JSON path>: <message>"`` (for example
``"$.metrics.ci95.value: 0.0120 does not match 0.0113 recomputed from the evidence"``). Nothing in
a file is executed; only JSON is parsed. Any JSON value may be passed to :func:`validate_result`:
it returns problems, it does not raise.

Checks, in order; each of the first two stops the validation when it finds anything:

1. nesting depth at most :data:`MAX_DEPTH`;
2. the JSON Schema (``leaderboard/result.schema.json``; ``kind`` selects the few-shot or the
   continual form; ``method.configuration`` and ``method.params_hash`` are required from 1.2.0);
3. identity, both kinds: ``method.params_hash``, when present, recomputed from ``method.params``
   (:func:`protobench.leaderboard.identity.params_hash`); a configuration of the hashed form
   ``<method.name>@<12 hex>`` must carry the first 12 hex digits of that hash;
4. few-shot: ``episodes.n`` against the per-episode evidence; when ``evidence.episodes`` is
   included, its count, its structure, and its digest (recomputed) against ``episodes.digest``;
   then mean accuracy and CI recomputed from ``evidence.per_episode_accuracy``;
5. continual: matrix and vector lengths against ``stream_spec.n_experiences`` (and task-aware
   matrix and metric present together); only if those hold, every metric recomputed with
   :mod:`protobench.continual.metrics` and its definition compared with the one the validator computes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jsonschema import Draft202012Validator

from protobench.continual.metrics import (
    DEFINITIONS,
    TASK_AWARE_AVERAGE_ACCURACY_DEFINITION,
    average_accuracy,
    continual_metrics,
)
from protobench.fewshot.episodes import Episode, episode_digest
from protobench.fewshot.metrics import mean_ci95
from protobench.leaderboard.identity import HASH_CHARS, hashed_configuration, params_hash
from protobench.leaderboard.schema import result_schema

MAX_FILE_BYTES = 64 * 2**20
MAX_DEPTH = 100  # nesting of lists and objects; a real result file needs fewer than 10
MAX_MESSAGE_CHARS = 300  # schema messages quote the offending value; long ones are cut
TOLERANCE = 1e-9  # absolute, on accuracies in [0, 1]: rounding, nothing more


def json_path(parts) -> str:
    """``['a', 0, 'b']`` -> ``$.a[0].b``."""
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _shorten(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."


def _deeper_than(value, limit: int) -> bool:
    """Whether lists/objects in ``value`` nest more than ``limit`` levels (iterative, no recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _agrees(claimed, recomputed: float | None) -> bool:
    """``claimed`` (a JSON number or null) equals ``recomputed`` within :data:`TOLERANCE`; None only matches None."""
    if claimed is None or recomputed is None:
        return claimed is None and recomputed is None
    try:
        return abs(float(claimed) - recomputed) <= TOLERANCE
    except OverflowError:  # an integer beyond the float range
        return False


def recomputed_metrics(result: dict) -> dict[str, float | None]:
    """Every derived figure of a schema-valid result, recomputed from its evidence.

    Few-shot: ``mean_accuracy`` and ``ci95`` from ``evidence.per_episode_accuracy``. Continual: the
    metrics of :data:`protobench.continual.metrics.DEFINITIONS` from ``evidence.accuracy_matrix`` and
    ``evidence.untrained_accuracy``, plus ``task_aware_average_accuracy`` when
    ``evidence.task_aware_accuracy_matrix`` is present (``None`` marks an undefined metric). Raises
    ``ValueError`` on evidence of the wrong shape; :func:`validate_result` checks shapes first.
    """
    evidence = result["evidence"]
    if result["kind"] == "continual":
        values = continual_metrics(evidence["accuracy_matrix"], evidence["untrained_accuracy"])
        if "task_aware_accuracy_matrix" in evidence:
            values["task_aware_average_accuracy"] = average_accuracy(evidence["task_aware_accuracy_matrix"])
        return values
    mean, ci95 = mean_ci95(evidence["per_episode_accuracy"])
    return {"mean_accuracy": mean, "ci95": ci95}


def validate_result(result) -> list[str]:
    """Problems with a parsed result file (any JSON value); an empty list means it is valid."""
    try:
        return _validate(result)
    except RecursionError:  # belt and braces: _deeper_than should have caught this
        return [f"$: nested too deeply to check (more than {MAX_DEPTH} levels)"]


def _validate(result) -> list[str]:
    if _deeper_than(result, MAX_DEPTH):
        return [f"$: lists and objects nest more than {MAX_DEPTH} levels deep"]
    validator = Draft202012Validator(result_schema())
    errors = sorted(validator.iter_errors(result), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{json_path(error.absolute_path)}: {_shorten(error.message)}" for error in errors]
    if problems:
        return problems
    problems = _identity_problems(result["method"])
    if result["kind"] == "continual":
        return problems + (_continual_shape_problems(result) or _metric_problems(result))
    return problems + _fewshot_episode_problems(result) + _metric_problems(result)


def _identity_problems(method: dict) -> list[str]:
    """``params_hash`` against the hash of ``params``; a hashed-form ``configuration`` against that hash.

    Both keys are optional before 1.2.0 (the schema requires them from 1.2.0); whichever is
    present is checked. A wrong ``params_hash`` is the one problem reported.
    """
    claimed, configuration = method.get("params_hash"), method.get("configuration")
    if claimed is None and configuration is None:
        return []
    try:
        actual = params_hash(method["params"])
    except (TypeError, ValueError) as error:  # e.g. a lone surrogate, which UTF-8 cannot encode
        return [f"$.method.params: cannot be hashed as canonical JSON: {_shorten(str(error))}"]
    if claimed is not None and claimed != actual:
        return [f"$.method.params_hash: {claimed} does not match {actual} recomputed from $.method.params"]
    expected = hashed_configuration(method["name"], method["params"])
    hashed_form = re.fullmatch(rf"{re.escape(method['name'])}@[0-9a-f]{{{HASH_CHARS}}}", configuration or "")
    if hashed_form and configuration != expected:
        return [f"$.method.configuration: {configuration} has the hashed form <method.name>@<{HASH_CHARS} hex> "
                f"but the params hash gives {expected}"]
    return []


def _fewshot_episode_problems(result: dict) -> list[str]:
    """Episode counts, and the digest of ``evidence.episodes`` when the file includes them."""
    problems = []
    n_claimed, evidence = result["episodes"]["n"], result["evidence"]
    n_values = len(evidence["per_episode_accuracy"])
    if n_claimed != n_values:
        problems.append(f"$.episodes.n: {n_claimed} episodes claimed but "
                        f"$.evidence.per_episode_accuracy holds {n_values}")
    episodes = evidence.get("episodes")
    if episodes is None:
        return problems
    if len(episodes) != n_claimed:
        problems.append(f"$.evidence.episodes: holds {len(episodes)} episodes but $.episodes.n is {n_claimed}")
    for i, episode in enumerate(episodes):
        sizes = [len(episode[key]) for key in ("classes", "support", "query")]
        if len(set(sizes)) != 1:
            return problems + [f"$.evidence.episodes[{i}]: classes, support and query need one entry per class, "
                               f"got {sizes[0]}, {sizes[1]} and {sizes[2]}"]
    digest = episode_digest(Episode.from_groups(e["classes"], e["support"], e["query"]) for e in episodes)
    claimed = result["episodes"]["digest"]
    if digest != claimed:
        problems.append(f"$.episodes.digest: {claimed} does not match {digest} recomputed from $.evidence.episodes")
    return problems


def _continual_shape_problems(result: dict) -> list[str]:
    """Lengths the schema cannot tie together: everything is T = ``stream_spec.n_experiences`` long."""
    problems = []
    spec, evidence, metrics = result["benchmark"]["stream_spec"], result["evidence"], result["metrics"]
    T = spec["n_experiences"]
    expected = f"expected {T} ($.benchmark.stream_spec.n_experiences)"
    class_order = spec["class_order"]
    if class_order is not None and len(class_order) != T:
        problems.append(f"$.benchmark.stream_spec.class_order: {len(class_order)} experiences listed, {expected}")
    for name in ("accuracy_matrix", "task_aware_accuracy_matrix"):
        matrix = evidence.get(name)
        if matrix is None:
            continue
        if len(matrix) != T:
            problems.append(f"$.evidence.{name}: {len(matrix)} rows, {expected}")
        bad_rows = [i for i, row in enumerate(matrix) if len(row) != T]
        if bad_rows:
            i = bad_rows[0]
            more = f" (and {len(bad_rows) - 1} more rows)" if len(bad_rows) > 1 else ""
            problems.append(f"$.evidence.{name}[{i}]: {len(matrix[i])} entries, {expected}{more}")
    if len(evidence["untrained_accuracy"]) != T:
        problems.append(f"$.evidence.untrained_accuracy: {len(evidence['untrained_accuracy'])} entries, {expected}")
    has_matrix, has_metric = "task_aware_accuracy_matrix" in evidence, "task_aware_average_accuracy" in metrics
    if has_metric and not has_matrix:
        problems.append("$.metrics.task_aware_average_accuracy: reported without "
                        "$.evidence.task_aware_accuracy_matrix to recompute it from")
    if has_matrix and not has_metric:
        problems.append("$.evidence.task_aware_accuracy_matrix: present but "
                        "$.metrics.task_aware_average_accuracy is missing")
    return problems


def _metric_problems(result: dict) -> list[str]:
    """Claimed metric values (and, for continual files, definitions) against the recomputed ones."""
    problems = []
    for name, value in recomputed_metrics(result).items():
        claimed = result["metrics"][name]["value"]
        if not _agrees(claimed, value):
            problems.append(f"$.metrics.{name}.value: {_shorten(repr(claimed))} does not match {value!r} "
                            "recomputed from the evidence")
    if result["kind"] == "continual":
        definitions = {**DEFINITIONS, "task_aware_average_accuracy": TASK_AWARE_AVERAGE_ACCURACY_DEFINITION}
        for name, metric in result["metrics"].items():
            if name in definitions and metric["definition"] != definitions[name]:
                problems.append(f"$.metrics.{name}.definition: {_shorten(repr(metric['definition']))} is not "
                                f"the definition the value is checked against, {definitions[name]!r}")
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
