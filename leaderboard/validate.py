"""Check result files: bounds on hostile input, schema conformance, then every derived figure against the evidence.

Result files come from strangers (DESIGN.md, "Results from strangers"). A problem is reported as
``"<JSON path>: <message>"`` (for example
``"$.metrics.ci95.value: 0.0120 does not match 0.0113 recomputed from the evidence"``). Nothing in
a file is executed; only JSON is parsed. Any value may be passed to :func:`validate_result`: it
returns problems, it does not raise. At most :data:`MAX_PROBLEMS` problems are listed.

Reading (:func:`validate_file`): only a regular file (a symlink is followed, then checked; FIFOs,
directories and devices are refused without being opened for reading), at most
:data:`MAX_FILE_BYTES` bytes actually read, strict UTF-8, JSON without ``NaN``/``Infinity`` and
without a key repeated in one object.

Checks, in order; each of the first three stops the validation when it finds anything:

1. the large evidence arrays, measured before anything walks them: ``per_episode_accuracy`` and
   ``evidence.episodes`` at most :data:`MAX_EPISODES` items, the accuracy matrices, their rows,
   ``untrained_accuracy`` and ``class_order`` at most :data:`MAX_EXPERIENCES`;
2. every value, keys included (one iterative walk): nesting depth at most :data:`MAX_DEPTH`;
   strings at most :data:`MAX_STRING_CHARS` characters (keys :data:`MAX_KEY_CHARS`) and printable
   (see :data:`UNPRINTABLE`); integers within +-:data:`MAX_INTEGER`; floats finite; arrays at most
   :data:`MAX_ARRAY_ITEMS` items, objects :data:`MAX_OBJECT_KEYS` keys, :data:`MAX_VALUES` values
   in all; no duplicate keys; nothing but JSON types;
3. the JSON Schema (``leaderboard/result.schema.json``; ``kind`` selects the few-shot or the
   continual form; ``method.configuration`` and ``method.params_hash`` are required from 1.2.0;
   tighter per-field lengths and counts);
4. identity, both kinds: ``method.params_hash``, when present, recomputed from ``method.params``
   (:func:`protobench.leaderboard.identity.params_hash`); a configuration of the hashed form
   ``<method.name>@<12 hex>`` must carry the first 12 hex digits of that hash;
5. few-shot: ``episodes.n`` against the per-episode evidence; when ``evidence.episodes`` is
   included, its count, its structure, and its digest (recomputed) against ``episodes.digest``;
   the episode spec must build (:func:`protobench.fewshot.episodes.spec_from_dict`), and
   ``benchmark.protocol`` must be its key (files before 1.2.0 may use the old spelling
   ``"5-way 1-shot 15-query"``); ``episodes.n_classes`` must allow the spec's way; every
   per-episode accuracy must be a whole number of correct answers out of the episode's queries;
   then mean accuracy and CI recomputed from ``evidence.per_episode_accuracy`` and their
   definitions compared with :mod:`protobench.fewshot.metrics`;
6. continual: matrix and vector lengths against ``stream_spec.n_experiences`` (and task-aware
   matrix and metric present together); only if those hold, every metric recomputed with
   :mod:`protobench.continual.metrics` and its definition compared with the one the validator computes.

The minimum number of episodes a leaderboard ranks is not checked here: a valid file may hold
fewer; submission and ranking enforce it.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from functools import cache
from pathlib import Path

import numpy as np
from jsonschema import Draft202012Validator

from protobench.continual.metrics import (
    DEFINITIONS,
    TASK_AWARE_AVERAGE_ACCURACY_DEFINITION,
    average_accuracy,
    continual_metrics,
)
from protobench.fewshot.episodes import Episode, EpisodeSpec, episode_digest, spec_from_dict
from protobench.fewshot.metrics import CI95_DEFINITION, MEAN_DEFINITION, mean_ci95
from protobench.leaderboard.identity import HASH_CHARS, hashed_configuration, params_hash
from protobench.leaderboard.schema import result_schema

MAX_FILE_BYTES = 64 * 2**20
MAX_DEPTH = 100  # nesting of lists and objects; a real result file needs fewer than 10
MAX_MESSAGE_CHARS = 300  # schema messages quote the offending value; long ones are cut
MAX_PROBLEMS = 100  # problems listed for one file; a line at $ says when more were found
TOLERANCE = 1e-9  # absolute, on accuracies in [0, 1]: rounding, nothing more

# Bounds on every value of a file from a stranger. The schema sets tighter ones on named fields
# (result.schema.json); tests check that the two agree where they overlap.
MAX_STRING_CHARS = 1024  # any string, free-form ones (method.params, training, ...) included
MAX_KEY_CHARS = 128  # any key of any object
MAX_INTEGER = 2**64 - 1  # |n| of any integer: a seed or key is at most 2**64 - 1
MAX_ARRAY_ITEMS = 100_000  # any array
MAX_OBJECT_KEYS = 10_000  # any object
MAX_VALUES = 3_000_000  # all values of a file together (bounds the time the schema check takes)
MAX_EPISODES = 100_000  # evaluation episodes of a few-shot file
MAX_EXPERIENCES = 1000  # T, experiences of a continual stream

# Characters no field needs and that can disguise text: C0 and C1 controls (newline and tab
# included), the line and paragraph separators, bidirectional marks, embeddings, overrides and
# isolates, and surrogate code points (json.loads turns "\ud800" into a lone surrogate; a valid
# escaped pair becomes one character, so any surrogate left is lone).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

FEWSHOT_DEFINITIONS = {"mean_accuracy": MEAN_DEFINITION, "ci95": CI95_DEFINITION}
CONTINUAL_DEFINITIONS = {**DEFINITIONS, "task_aware_average_accuracy": TASK_AWARE_AVERAGE_ACCURACY_DEFINITION}


def json_path(parts) -> str:
    """``['a', 0, 'b']`` -> ``$.a[0].b``."""
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _shorten(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."


def _quote(text: str, limit: int = 40) -> str:
    """``text`` for a problem line: ``repr`` (which escapes every unprintable character), cut to ``limit``."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _agrees(claimed, recomputed: float | None) -> bool:
    """``claimed`` (a JSON number or null) equals ``recomputed`` within :data:`TOLERANCE`; None only matches None."""
    if claimed is None or recomputed is None:
        return claimed is None and recomputed is None
    try:
        return abs(float(claimed) - recomputed) <= TOLERANCE
    except OverflowError:  # an integer beyond the float range
        return False


# --- parsing and reading ------------------------------------------------------------------------


class _DuplicateKeys(dict):
    """A parsed JSON object in which some key appeared more than once (the last value is kept)."""

    __slots__ = ("duplicates",)


def _object_from_pairs(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook``: a dict, marked as :class:`_DuplicateKeys` when a key repeats."""
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    duplicates: list[str] = []
    for key, _ in pairs:
        if key in seen and key not in duplicates:
            duplicates.append(key)
        seen.add(key)
    marked = _DuplicateKeys(value)
    marked.duplicates = duplicates
    return marked


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str):
    """``text`` parsed as strict JSON. Raises ``ValueError`` for invalid JSON, ``NaN`` or
    ``Infinity``, and ``RecursionError`` for absurd nesting. An object with a repeated key is
    returned marked, and :func:`validate_result` reports it with its path."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object_from_pairs)


_FILE_TYPES = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket")]


def _not_regular(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")
    return f"$: cannot read file: {kind}, not a regular file"


def read_bounded(path: str | Path) -> tuple[bytes | None, str | None]:
    """``(content, None)`` for a regular file of at most :data:`MAX_FILE_BYTES` bytes, else ``(None, problem)``.

    Symlinks are followed and the target checked with ``os.stat`` before anything is opened, so a
    FIFO (whose ``open`` would block), a directory or a device is refused unopened. The file is
    opened non-blocking and checked again on the descriptor (it may have been swapped in between),
    and at most ``MAX_FILE_BYTES + 1`` bytes are read whatever ``st_size`` says (files in /proc
    report 0).
    """
    try:
        reason = _not_regular(os.stat(path).st_mode)
        if reason:
            return None, reason
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
        descriptor = os.open(path, flags)
        with os.fdopen(descriptor, "rb") as stream:
            reason = _not_regular(os.fstat(stream.fileno()).st_mode)
            if reason:
                return None, reason
            content = stream.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as error:  # ValueError: a path with a NUL character
        return None, f"$: cannot read file: {getattr(error, 'strerror', None) or error}"
    if len(content) > MAX_FILE_BYTES:
        return None, f"$: file is larger than {MAX_FILE_BYTES:,} bytes ({MAX_FILE_BYTES / 2**20:g} MiB)"
    return content, None


def validate_file(path: str | Path) -> list[str]:
    """Problems with the result file at ``path`` (not a readable regular file, too large, not
    UTF-8, not JSON, a repeated key, or invalid as :func:`validate_result` says)."""
    content, problem = read_bounded(path)
    if problem:
        return [problem]
    try:
        text = content.decode("utf-8")  # strict: invalid bytes and encoded surrogates are errors
    except UnicodeDecodeError as error:
        return [f"$: not UTF-8 text: byte {error.start} ({error.reason})"]
    try:
        result = parse_json(text)
    except (ValueError, RecursionError) as error:
        return [f"$: not valid JSON: {_shorten(str(error))}"]
    return validate_result(result)


# --- the checks ----------------------------------------------------------------------------------


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
    """Problems with a parsed result file (any value); an empty list means it is valid.

    Never raises. At most :data:`MAX_PROBLEMS` problems are listed, then one line at ``$`` says
    how many more there were.
    """
    try:
        problems = _validate(result)
    except RecursionError:  # belt and braces: the value walk should have caught this
        return [f"$: nested too deeply to check (more than {MAX_DEPTH} levels)"]
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"$: more problems not listed (only the first {MAX_PROBLEMS} are)"]
    return problems


def _validate(result) -> list[str]:
    problems = _evidence_length_problems(result) or _value_problems(result)
    if problems:
        return problems
    errors = sorted(_schema_validator().iter_errors(result), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{json_path(error.absolute_path)}: {_shorten(error.message)}" for error in errors]
    if problems:
        return problems
    problems = _identity_problems(result["method"])
    if result["kind"] == "continual":
        return problems + (_continual_shape_problems(result) or _metric_problems(result))
    return problems + _fewshot_episode_problems(result) + _fewshot_spec_problems(result) + _metric_problems(result)


@cache
def _schema_validator() -> Draft202012Validator:
    return Draft202012Validator(result_schema())


def _evidence_length_problems(result) -> list[str]:
    """The arrays that grow with the run, measured against their bounds before anything walks them.

    ``per_episode_accuracy`` and ``evidence.episodes``: :data:`MAX_EPISODES`; the accuracy
    matrices (rows and each row), ``untrained_accuracy`` and ``stream_spec.class_order``:
    :data:`MAX_EXPERIENCES`. Only lengths are read, so a file of ten million accuracies is refused
    at once. Anything that is not a list here is left to the later checks.
    """
    if not isinstance(result, dict):
        return []
    evidence = result.get("evidence")
    evidence = evidence if isinstance(evidence, dict) else {}
    benchmark = result.get("benchmark")
    stream_spec = benchmark.get("stream_spec") if isinstance(benchmark, dict) else None
    stream_spec = stream_spec if isinstance(stream_spec, dict) else {}
    arrays = [("$.evidence.per_episode_accuracy", evidence.get("per_episode_accuracy"), MAX_EPISODES, "episodes"),
              ("$.evidence.episodes", evidence.get("episodes"), MAX_EPISODES, "episodes"),
              ("$.evidence.untrained_accuracy", evidence.get("untrained_accuracy"), MAX_EXPERIENCES, "experiences"),
              ("$.benchmark.stream_spec.class_order", stream_spec.get("class_order"), MAX_EXPERIENCES,
               "experiences")]
    for name in ("accuracy_matrix", "task_aware_accuracy_matrix"):
        matrix = evidence.get(name)
        arrays.append((f"$.evidence.{name}", matrix, MAX_EXPERIENCES, "experiences"))
        if isinstance(matrix, list) and len(matrix) <= MAX_EXPERIENCES:
            arrays += [(f"$.evidence.{name}[{i}]", row, MAX_EXPERIENCES, "experiences") for i, row in enumerate(matrix)]
    return [f"{path}: {len(value):,} items, more than the {limit:,} {unit} a result may hold"
            for path, value, limit, unit in arrays if isinstance(value, list) and len(value) > limit]


def _path_text(path) -> str:
    """The JSON path of a walk's linked path ``(parent, key or index)`` (``None`` is the root)."""
    parts = []
    while path is not None:
        path, part = path
        parts.append(part)
    return json_path(reversed(parts))


def _character_problem(text: str) -> str | None:
    """What is wrong with the first unprintable character of ``text`` (see :data:`UNPRINTABLE`), if any."""
    found = UNPRINTABLE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        kind = "a lone surrogate"
    elif code <= 0x9F:
        kind = "a control character"
    elif code in (0x2028, 0x2029):
        kind = "a line or paragraph separator"
    else:
        kind = "a bidirectional formatting character"
    return f"contains {kind} (U+{code:04X}) at index {found.start()}"


def _scalar_problem(value) -> str | None:
    """What is wrong with a value that is not a list or an object, if anything."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            return f"string of {len(value):,} characters, longer than the limit of {MAX_STRING_CHARS}"
        return _character_problem(value)
    if isinstance(value, int):
        if -MAX_INTEGER <= value <= MAX_INTEGER:
            return None
        shown = str(value) if value.bit_length() <= 256 else f"an integer of {value.bit_length()} bits"
        return f"{shown} is outside the integer range [-(2**64 - 1), 2**64 - 1]"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number (1e400 and beyond overflow)"
    return f"a {type(value).__name__} is not a JSON value"


def _key_problem(key) -> str | None:
    """What is wrong with an object key, if anything."""
    if not isinstance(key, str):
        return f"a key of type {type(key).__name__} is not a string"
    if len(key) > MAX_KEY_CHARS:
        return f"key {_quote(key)} of {len(key):,} characters, longer than the limit of {MAX_KEY_CHARS}"
    problem = _character_problem(key)
    return f"key {_quote(key)} {problem}" if problem else None


def _value_problems(value) -> list[str]:
    """Every value and key of ``value`` against the bounds on hostile input (module docstring, check 2).

    One iterative walk, no recursion. A list or object over its size bound is reported without
    being entered; a bad key is reported at its object and its value is not entered. Stops at the
    first container nested :data:`MAX_DEPTH` deep (the only problem then reported), or once
    :data:`MAX_VALUES` values or more than :data:`MAX_PROBLEMS` problems have been seen.
    """
    problems: list[str] = []
    values = 0
    stack: list[tuple[object, tuple | None, int]] = [(value, None, 0)]
    while stack and len(problems) <= MAX_PROBLEMS:
        node, path, depth = stack.pop()
        if not isinstance(node, (dict, list)):
            problem = _scalar_problem(node)
            if problem:
                problems.append(f"{_path_text(path)}: {problem}")
            continue
        if depth >= MAX_DEPTH:
            return [f"$: lists and objects nest more than {MAX_DEPTH} levels deep"]
        limit, noun = (MAX_OBJECT_KEYS, "keys") if isinstance(node, dict) else (MAX_ARRAY_ITEMS, "items")
        if len(node) > limit:
            problems.append(f"{_path_text(path)}: {len(node):,} {noun}, more than the limit of {limit:,}")
            continue
        values += len(node)
        if values > MAX_VALUES:
            problems.append(f"$: more than {MAX_VALUES:,} values in all")
            break
        if isinstance(node, _DuplicateKeys):
            problems += [f"{_path_text(path)}: key {_quote(key)} appears more than once" for key in node.duplicates]
        if isinstance(node, dict):
            children = []
            for key, child in node.items():
                problem = _key_problem(key)
                if problem:
                    problems.append(f"{_path_text(path)}: {problem}")
                else:
                    children.append((key, child))
        else:
            children = enumerate(node)
        containers = []
        for part, child in children:
            if isinstance(child, (dict, list)):
                containers.append((child, (path, part), depth + 1))
            else:
                problem = _scalar_problem(child)
                if problem:
                    problems.append(f"{_path_text((path, part))}: {problem}")
        stack += reversed(containers)  # first child on top: problems come in document order
    return problems


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
    except (TypeError, ValueError) as error:  # unreachable after the value walk; kept as a guard
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


def legacy_protocol(spec: EpisodeSpec) -> str:
    """How files before 1.2.0 spelled a fixed spec's protocol: ``"5-way 1-shot 15-query"``."""
    return f"{spec.n_way}-way {spec.n_shot}-shot {spec.n_query}-query"


def _fewshot_spec_problems(result: dict) -> list[str]:
    """What the episode spec says against the protocol, the class count and the accuracies.

    The spec must build (:func:`spec_from_dict`); ``benchmark.protocol`` must be its key
    (before 1.2.0, the :func:`legacy_protocol` spelling is accepted too); ``episodes.n_classes``,
    when given, must allow the smallest way; each per-episode accuracy must be ``k / m`` for a
    whole ``k``, within :data:`TOLERANCE`, with ``m`` the episode's queries: ``n_way * n_query``
    for a fixed spec, the query groups of ``evidence.episodes`` for a variable one (unchecked
    without them).
    """
    benchmark, episodes = result["benchmark"], result["episodes"]
    try:
        spec = spec_from_dict(benchmark["episode_spec"])
    except (TypeError, ValueError) as error:
        return [f"$.benchmark.episode_spec: not an episode spec the harness can build: {_shorten(str(error))}"]
    problems = []
    protocol, accepted = benchmark["protocol"], [spec.key]
    minor = int(result["schema_version"].split(".")[1])
    if minor < 2 and isinstance(spec, EpisodeSpec):
        accepted.append(legacy_protocol(spec))
    if protocol not in accepted:
        spelled = " or ".join(repr(text) for text in accepted)
        problems.append(f"$.benchmark.protocol: {_quote(protocol, 128)} contradicts $.benchmark.episode_spec, "
                        f"whose protocol is {spelled}")
    smallest_way = spec.n_way if isinstance(spec, EpisodeSpec) else spec.min_way
    n_classes = episodes.get("n_classes")
    if n_classes is not None and n_classes < smallest_way:
        problems.append(f"$.episodes.n_classes: {n_classes} classes cannot make the {smallest_way}-way episodes "
                        "of $.benchmark.episode_spec")
    return problems + _accuracy_grid_problems(result, spec)


def _accuracy_grid_problems(result: dict, spec) -> list[str]:
    """Per-episode accuracies that no count of correct answers gives (see :func:`_fewshot_spec_problems`)."""
    evidence = result["evidence"]
    accuracies = np.asarray(evidence["per_episode_accuracy"], dtype=np.float64)
    if isinstance(spec, EpisodeSpec):
        queries = np.full(len(accuracies), spec.n_way * spec.n_query, dtype=np.float64)
        source = f"the {spec.n_way} x {spec.n_query} queries of every episode ($.benchmark.episode_spec)"
    else:
        included = evidence.get("episodes")
        if included is None or len(included) != len(accuracies):
            return []
        queries = np.array([sum(len(group) for group in episode["query"]) for episode in included], dtype=np.float64)
        source = "the queries of the episode ($.evidence.episodes)"
    answers = accuracies * queries
    off = np.flatnonzero(np.abs(answers - np.round(answers)) > TOLERANCE * queries)
    if off.size == 0:
        return []
    i = int(off[0])
    more = f" (and {off.size - 1} more episodes)" if off.size > 1 else ""
    claimed = evidence["per_episode_accuracy"][i]
    return [f"$.evidence.per_episode_accuracy[{i}]: {claimed!r} is not a whole number of correct answers "
            f"out of {int(queries[i])}, {source}{more}"]


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
    """Claimed metric values and definitions against the recomputed values and the harness's definitions."""
    problems = []
    for name, value in recomputed_metrics(result).items():
        claimed = result["metrics"][name]["value"]
        if not _agrees(claimed, value):
            problems.append(f"$.metrics.{name}.value: {_shorten(repr(claimed))} does not match {value!r} "
                            "recomputed from the evidence")
    definitions = CONTINUAL_DEFINITIONS if result["kind"] == "continual" else FEWSHOT_DEFINITIONS
    for name, metric in result["metrics"].items():
        if name in definitions and metric["definition"] != definitions[name]:
            problems.append(f"$.metrics.{name}.definition: {_shorten(repr(metric['definition']))} is not "
                            f"the definition the value is checked against, {definitions[name]!r}")
    return problems
