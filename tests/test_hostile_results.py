"""Result files from strangers (DESIGN.md, "Results from strangers"): every string bounded and
printable, every number finite and bounded, duplicate keys refused, only regular files read and
the bytes read bounded, large arrays refused before anything walks them, and few-shot files whose
figures the episode spec cannot produce or whose protocol contradicts the spec refused."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_fewshot_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validate_continual import continual_result, fewshot_result_with_episodes

from protobench.fewshot import VariableEpisodeSpec
from protobench.fewshot.metrics import CI95_DEFINITION, MEAN_DEFINITION, mean_ci95
from protobench.leaderboard import validate as validator
from protobench.leaderboard.identity import hashed_configuration, params_hash
from protobench.leaderboard.schema import result_schema
from protobench.leaderboard.validate import (
    MAX_ARRAY_ITEMS,
    MAX_EPISODES,
    MAX_EXPERIENCES,
    MAX_KEY_CHARS,
    MAX_OBJECT_KEYS,
    MAX_PROBLEMS,
    MAX_STRING_CHARS,
    MAX_VALUES,
    UNPRINTABLE,
    validate_file,
    validate_result,
)

RESULTS = Path(__file__).resolve().parents[1] / "leaderboard" / "results"
QUERIES = 5 * 15  # predictions per episode of the 5-way 15-query results built below


def fewshot(correct: list[int] | None = None) -> dict:
    """A valid 5-way 1-shot 15-query result, schema 1.2.0, whose accuracies are ``correct / 75``."""
    correct = correct if correct is not None else [40 + (7 * i) % 36 for i in range(40)]
    return make_fewshot_result("toy-method", 1, np.asarray(correct) / QUERIES)


def with_accuracies(result: dict, accuracies: list) -> dict:
    """``result`` with these per-episode accuracies and the metrics recomputed from them."""
    result = copy.deepcopy(result)
    result["evidence"]["per_episode_accuracy"] = accuracies
    result["episodes"]["n"] = len(accuracies)
    mean, ci95 = mean_ci95(accuracies)
    result["metrics"]["mean_accuracy"]["value"], result["metrics"]["ci95"]["value"] = mean, ci95
    return result


def with_params(result: dict, params: dict) -> dict:
    """``result`` with new ``method.params``, its hash and hashed configuration recomputed (so still valid)."""
    result = copy.deepcopy(result)
    method = result["method"]
    method["params"], method["params_hash"] = params, params_hash(params)
    method["configuration"] = hashed_configuration(method["name"], params)
    return result


def file_problems(tmp_path: Path, content: str | bytes) -> list[str]:
    path = tmp_path / "result.json"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return validate_file(path)


def test_the_results_built_here_are_valid():
    assert validate_result(fewshot()) == []
    assert validate_result(continual_result()) == []
    assert validate_result(fewshot_result_with_episodes()) == []


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_committed_results_still_validate(path):
    assert validate_file(path) == []


# --- strings: bounded and printable --------------------------------------------------------------

BAD_CHARACTERS = {
    "\x00": "a control character", "\x07": "a control character", "\t": "a control character",
    "\n": "a control character", "\r": "a control character", "\x1b": "a control character",
    "\x7f": "a control character", "\x85": "a control character", "\x9f": "a control character",
    "\u2028": "a line or paragraph separator", "\u2029": "a line or paragraph separator",
    "\u202a": "a bidirectional formatting character", "\u202e": "a bidirectional formatting character",
    "\u2066": "a bidirectional formatting character", "\u2069": "a bidirectional formatting character",
    "\u200e": "a bidirectional formatting character", "\u200f": "a bidirectional formatting character",
    "\u061c": "a bidirectional formatting character",
    chr(0xD800): "a lone surrogate", chr(0xDBFF): "a lone surrogate", chr(0xDC00): "a lone surrogate",
}

# where a string goes -> how to put it there; named fields, free-form params, nested logs, lists
PLACES = {
    "$.run.id": lambda r, s: r["run"].__setitem__("id", s),
    "$.method.backbone": lambda r, s: r["method"].__setitem__("backbone", s),
    "$.benchmark.dataset": lambda r, s: r["benchmark"].__setitem__("dataset", s),
    "$.metrics.ci95.definition": lambda r, s: r["metrics"]["ci95"].__setitem__("definition", s),
    "$.environment.platform": lambda r, s: r["environment"].__setitem__("platform", s),
    "$.method.params.optimiser.name": lambda r, s: r["method"]["params"].__setitem__("optimiser", {"name": s}),
    "$.method.params.tags[1]": lambda r, s: r["method"]["params"].__setitem__("tags", ["fine", s]),
    "$.training.curve[0].note": lambda r, s: r["training"].__setitem__("curve", [{"episode": 1, "note": s}]),
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("character", BAD_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_unprintable_characters_are_refused_wherever_they_are(place, character):
    result = fewshot()
    PLACES[place](result, f"ab{character}cd")
    code = f"U+{ord(character):04X}"
    assert validate_result(result) == [f"{place}: contains {BAD_CHARACTERS[character]} ({code}) at index 2"]


@pytest.mark.parametrize("character", ["\x1b", "\u202e", "\ud800"], ids=["escape", "override", "surrogate"])
def test_unprintable_keys_are_refused_at_their_object(character):
    result = fewshot()
    result["method"]["params"]["nested"] = {f"a{character}": 1}
    (problem,) = validate_result(result)
    assert problem.startswith(f"$.method.params.nested: key {ascii('a' + character)} contains ")
    assert problem.endswith(f"(U+{ord(character):04X}) at index 1")
    result = fewshot()
    result[f"extra{character}"] = None
    (problem,) = validate_result(result)
    assert problem.startswith(f"$: key {ascii('extra' + character)} contains ")


def test_escaped_surrogates_in_a_file_are_refused_and_escaped_pairs_accepted(tmp_path):
    good = with_params(fewshot(), {"emoji": "\U0001f600", "name": "réseau 残差"})
    text = json.dumps(good)  # ensure_ascii: the emoji is written as the pair \ud83d\ude00
    assert "\\ud83d\\ude00" in text and file_problems(tmp_path, text) == []
    lone = text.replace("\\ud83d\\ude00", "\\ud83d")
    assert file_problems(tmp_path, lone) == ["$.method.params.emoji: contains a lone surrogate (U+D83D) at index 0"]
    key = text.replace('"emoji"', '"\\udfff"')
    assert file_problems(tmp_path, key) == ["$.method.params: key '\\udfff' contains a lone surrogate (U+DFFF) "
                                            "at index 0"]


def test_problem_lines_never_carry_the_hostile_characters():
    result = fewshot()
    result["method"]["params"] = {"\u202eevil\x1b[2J": "\u2066x\n"}
    result["benchmark"]["protocol"] = "\u202e" * 10
    problems = validate_result(result)
    assert [p.split(":")[0] for p in problems] == ["$.method.params", "$.benchmark.protocol"]
    assert not any(UNPRINTABLE.search(problem) for problem in problems)


def test_strings_and_keys_are_bounded():
    longest = with_params(fewshot(), {"note": "x" * MAX_STRING_CHARS, "k" * MAX_KEY_CHARS: 1})
    assert validate_result(longest) == []
    result = fewshot()
    result["method"]["params"]["note"] = "x" * (MAX_STRING_CHARS + 1)
    result["training"]["k" * (MAX_KEY_CHARS + 1)] = 1
    assert validate_result(result) == [
        f"$.method.params.note: string of 1,025 characters, longer than the limit of {MAX_STRING_CHARS}",
        f"$.training: key '{'k' * 40}'... of 129 characters, longer than the limit of {MAX_KEY_CHARS}",
    ]


@pytest.mark.parametrize(("path", "limit"), [
    (("run", "harness_version"), 64), (("run", "time"), 64), (("schema_version",), 32),
    (("method", "version"), 64), (("method", "pretraining"), 256), (("benchmark", "protocol"), 128),
    (("environment", "torch"), 64), (("environment", "device"), 64), (("environment", "device_name"), 256),
])
def test_named_fields_have_tighter_bounds_in_the_schema(path, limit):
    result = fewshot()
    *parents, key = path
    target = result
    for part in parents:
        target = target[part]
    target[key] = "9" * (limit + 1)
    problems = validate_result(result)
    assert f"{'$.' + '.'.join(path)}: '{'9' * (limit + 1)}' is too long" in problems, problems


@pytest.mark.parametrize("text", ["$\\foo{$", "$x^2$", "$$", "a $\\mathrm{b}$ c", "100% {curly} [square] <b>"])
def test_mathtext_and_markup_like_text_is_a_legal_string(text):
    result = with_params(fewshot(), {"note": text, text: 1})
    result["method"]["backbone"] = result["method"]["pretraining"] = result["method"]["version"] = text
    result["benchmark"]["dataset"] = text
    assert validate_result(result) == []


# --- numbers: finite and bounded -----------------------------------------------------------------


@pytest.mark.parametrize("place", ["$.method.params.lr", "$.budget.eval_wall_seconds",
                                   "$.evidence.per_episode_accuracy[3]", "$.metrics.mean_accuracy.value"])
@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1.5e309"])
def test_numbers_that_overflow_to_infinity_are_refused(tmp_path, place, literal):
    marker = 0.123456789  # a number that occurs nowhere else in the file, replaced by the literal
    result = with_params(fewshot(), {"lr": 0.001})
    parts = place[2:].replace("[", ".").replace("]", "").split(".")
    target = result
    for part in parts[:-1]:
        target = target[part]
    last = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    target[last] = marker
    text = json.dumps(result).replace(repr(marker), literal)
    shown = "-inf" if literal.startswith("-") else "inf"
    assert file_problems(tmp_path, text) == [f"{place}: {shown} is not a finite number (1e400 and beyond overflow)"]


def test_a_huge_integer_count_is_refused_before_anything_converts_it(tmp_path):
    text = json.dumps(fewshot()).replace('"n_shot": 1', '"n_shot": 1' + "0" * 400)
    (problem,) = file_problems(tmp_path, text)
    assert problem.startswith("$.benchmark.episode_spec.n_shot: an integer of 1329 bits is outside the integer range")
    for value in (10**400, -(10**400), 10**5000):  # 10**5000: str() alone would raise
        result = fewshot()
        result["benchmark"]["episode_spec"]["n_shot"] = value
        (problem,) = validate_result(result)
        assert problem.startswith("$.benchmark.episode_spec.n_shot: an integer of")


def test_integers_are_bounded_by_2_to_the_64():
    result = fewshot()
    result["seeds"]["episodes"] = 2**64 - 1  # the largest key
    result["method"]["params"]["low"] = -(2**64 - 1)
    result = with_params(result, result["method"]["params"])
    assert validate_result(result) == []
    result["method"]["params"]["big"] = 2**64
    result["training"]["small"] = -(2**64)
    assert validate_result(result) == [
        "$.method.params.big: 18446744073709551616 is outside the integer range [-(2**64 - 1), 2**64 - 1]",
        "$.training.small: -18446744073709551616 is outside the integer range [-(2**64 - 1), 2**64 - 1]",
    ]


@pytest.mark.parametrize(("place", "value", "message"), [
    (("benchmark", "episode_spec", "n_way"), 1001, "is not valid under any of the given schemas"),
    (("benchmark", "episode_spec", "n_shot"), 10_001, "is not valid under any of the given schemas"),
    (("benchmark", "episode_spec", "n_query"), 10_001, "is not valid under any of the given schemas"),
    (("episodes", "n"), MAX_EPISODES + 1, "100001 is greater than the maximum of 100000"),
    (("episodes", "n_classes"), 10**7 + 1, "10000001 is greater than the maximum of 10000000"),
])
def test_counts_are_bounded_much_tighter(place, value, message):
    result = fewshot()
    target = result
    for part in place[:-1]:
        target = target[part]
    target[place[-1]] = value
    path = "$." + ".".join(place[:-1] if "episode_spec" in place else place)
    assert any(p.startswith(f"{path}: ") and p.endswith(message) for p in validate_result(result))


def test_python_values_that_json_cannot_hold_are_refused():
    result = fewshot()
    result["method"]["params"]["shape"] = (1, 2)
    result["training"]["when"] = {1, 2}
    result["environment"]["blob"] = b"\x00"
    assert validate_result(result) == ["$.method.params.shape: a tuple is not a JSON value",
                                       "$.training.when: a set is not a JSON value",
                                       "$.environment.blob: a bytes is not a JSON value"]
    assert validate_result({1: "a"}) == ["$: a key of type int is not a string"]


# --- duplicate keys ------------------------------------------------------------------------------


def test_duplicate_keys_are_refused_with_their_path(tmp_path):
    text = json.dumps(fewshot())
    assert file_problems(tmp_path, '{"kind": "continual", ' + text[1:]) == ["$: key 'kind' appears more than once"]
    same_value = text.replace('"split": "test"', '"split": "test", "split": "test"')
    assert file_problems(tmp_path, same_value) == ["$.benchmark: key 'split' appears more than once"]
    nested = text.replace('"curve": []', '"curve": [{"loss": 1.0, "loss": 0.5, "x": 1, "x": 2, "loss": 0}]')
    assert file_problems(tmp_path, nested) == ["$.training.curve[0]: key 'loss' appears more than once",
                                               "$.training.curve[0]: key 'x' appears more than once"]


# --- reading: only regular files, bytes bounded, strict UTF-8 -------------------------------------


def validate_in_thread(path: Path, timeout: float = 10.0) -> list[str]:
    """``validate_file(path)`` in a daemon thread, so that a validator which blocks (opening a FIFO
    with no writer) fails the test instead of hanging it."""
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(validate_file(path)), daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"validate_file({path}) blocked"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifos_are_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)
    (tmp_path / "link.json").symlink_to(fifo)
    for path in (fifo, tmp_path / "link.json"):
        assert validate_in_thread(path) == ["$: cannot read file: a FIFO (named pipe), not a regular file"]


def test_directories_and_links_to_them_are_refused(tmp_path):
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "link.json").symlink_to(tmp_path / "folder.json")
    for name in ("folder.json", "link.json"):
        assert validate_file(tmp_path / name) == ["$: cannot read file: a directory, not a regular file"]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_devices_and_links_to_them_are_refused(tmp_path):
    (tmp_path / "link.json").symlink_to("/dev/zero")
    for path in (Path("/dev/zero"), tmp_path / "link.json"):
        assert validate_in_thread(path) == ["$: cannot read file: a character device, not a regular file"]


def test_missing_files_and_dangling_links_are_reported(tmp_path):
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    for name in ("missing.json", "dangling.json"):
        assert validate_file(tmp_path / name) == ["$: cannot read file: No such file or directory"]


def test_the_bytes_read_are_bounded_whatever_the_size_claims(tmp_path, monkeypatch):
    monkeypatch.setattr(validator, "MAX_FILE_BYTES", 64)
    too_large = ["$: file is larger than 64 bytes (6.10352e-05 MiB)"]
    assert file_problems(tmp_path, b" " * 63 + b"[]") == too_large
    assert file_problems(tmp_path, b" " * 62 + b"[]") == ["$: [] is not of type 'object'"]  # 64 bytes: read
    status = Path("/proc/self/status")  # a regular file whose st_size is 0
    if status.is_file() and status.stat().st_size == 0:
        assert validate_file(status) == too_large


def test_a_sparse_file_is_refused_after_reading_only_the_limit(tmp_path):
    path = tmp_path / "sparse.json"
    with open(path, "wb") as stream:
        stream.truncate(2**34)  # 16 GiB of holes; only 64 MiB + 1 byte of it may be read
    assert validate_file(path) == ["$: file is larger than 67,108,864 bytes (64 MiB)"]


@pytest.mark.parametrize("content", [
    b'{"a": "\xff"}',  # not UTF-8 at all
    '{"a": "éa"}'.encode("latin-1"),
    b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8: strict decoding refuses it
    b'{"a": "\xc0\xaf"}',  # an overlong encoding of "/"
])
def test_files_must_be_strict_utf8(tmp_path, content):
    (problem,) = file_problems(tmp_path, content)
    assert problem.startswith("$: not UTF-8 text: byte 7 (")


# --- arrays: lengths measured before anything walks them ------------------------------------------


def test_ten_million_accuracies_are_refused_by_their_length():
    result = fewshot()
    result["evidence"]["per_episode_accuracy"] = [0.5] * 10_000_000
    result["episodes"]["n"] = 10_000_000
    assert validate_result(result) == ["$.evidence.per_episode_accuracy: 10,000,000 items, more than the "
                                       "100,000 episodes a result may hold"]


def test_a_file_of_too_many_accuracies_is_refused_by_their_length(tmp_path):
    result = fewshot()
    result["evidence"]["per_episode_accuracy"] = [0.5] * (MAX_EPISODES + 1)
    assert file_problems(tmp_path, json.dumps(result)) == [
        "$.evidence.per_episode_accuracy: 100,001 items, more than the 100,000 episodes a result may hold"]


def test_too_many_included_episodes_are_refused_by_their_length():
    result = fewshot_result_with_episodes()
    result["evidence"]["episodes"] = result["evidence"]["episodes"][:1] * (MAX_EPISODES + 1)
    assert validate_result(result) == ["$.evidence.episodes: 100,001 items, more than the 100,000 episodes a "
                                       "result may hold"]


def test_continual_evidence_is_bounded_by_the_number_of_experiences():
    result = continual_result()
    evidence = result["evidence"]
    evidence["accuracy_matrix"][1] = [0.5] * (MAX_EXPERIENCES + 1)
    evidence["untrained_accuracy"] = [0.5] * (MAX_EXPERIENCES + 1)
    result["benchmark"]["stream_spec"]["class_order"] = [[0]] * (MAX_EXPERIENCES + 1)
    assert validate_result(result) == [
        "$.evidence.untrained_accuracy: 1,001 items, more than the 1,000 experiences a result may hold",
        "$.benchmark.stream_spec.class_order: 1,001 items, more than the 1,000 experiences a result may hold",
        "$.evidence.accuracy_matrix[1]: 1,001 items, more than the 1,000 experiences a result may hold",
    ]
    result = continual_result()
    result["evidence"]["task_aware_accuracy_matrix"] = [[0.5]] * 5000
    assert validate_result(result) == ["$.evidence.task_aware_accuracy_matrix: 5,000 items, more than the 1,000 "
                                       "experiences a result may hold"]


def test_any_array_or_object_is_bounded():
    result = fewshot()
    result["method"]["params"]["table"] = [0] * (MAX_ARRAY_ITEMS + 1)
    result["training"]["log"] = {f"k{i}": i for i in range(MAX_OBJECT_KEYS + 1)}
    assert validate_result(result) == ["$.method.params.table: 100,001 items, more than the limit of 100,000",
                                       "$.training.log: 10,001 keys, more than the limit of 10,000"]


def test_the_values_of_a_file_are_bounded_in_all():
    result = fewshot()
    block = [0.5] * MAX_ARRAY_ITEMS
    result["training"]["logs"] = [block] * (MAX_VALUES // MAX_ARRAY_ITEMS)  # the same list, many times
    assert validate_result(result) == [f"$: more than {MAX_VALUES:,} values in all"]


def test_problems_listed_are_bounded():
    result = fewshot()
    result["method"]["params"] = {f"p{i}": "\x00" for i in range(1000)}
    problems = validate_result(result)
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == f"$: more problems not listed (only the first {MAX_PROBLEMS} are)"


def test_schema_and_validator_bounds_agree():
    defs = result_schema()["$defs"]
    evidence = defs["fewshot_evidence"]["properties"]
    assert evidence["per_episode_accuracy"]["maxItems"] == evidence["episodes"]["maxItems"] == MAX_EPISODES
    assert result_schema()["properties"]["episodes"]["properties"]["n"]["maximum"] == MAX_EPISODES
    assert defs["stream_spec"]["properties"]["n_experiences"]["maximum"] == MAX_EXPERIENCES
    for name in ("accuracy_matrix", "untrained_accuracy", "task_aware_accuracy_matrix"):
        assert defs["continual_evidence"]["properties"][name]["maxItems"] == MAX_EXPERIENCES


# --- few-shot semantics --------------------------------------------------------------------------


def test_accuracies_the_spec_cannot_produce_are_refused():
    correct = [40 + (7 * i) % 36 for i in range(40)]
    accuracies = [k / QUERIES for k in correct]
    accuracies[3], accuracies[9] = 0.5, 0.9  # 37.5 and 67.5 of 75 answers
    assert validate_result(with_accuracies(fewshot(), accuracies)) == [
        "$.evidence.per_episode_accuracy[3]: 0.5 is not a whole number of correct answers out of 75, the 5 x 15 "
        "queries of every episode ($.benchmark.episode_spec) (and 1 more episodes)"]
    nearly = [k / QUERIES + (1e-12 if i % 2 and k < QUERIES else -1e-12) for i, k in enumerate(correct)]
    nearly[0] = 0.0
    assert validate_result(with_accuracies(fewshot(), nearly)) == []


def test_variable_spec_accuracies_are_checked_against_the_included_episodes():
    spec = VariableEpisodeSpec(min_way=2, max_way=4, max_query=3, max_support=8)
    result = fewshot_result_with_episodes(spec)
    queries = [sum(len(group) for group in e["query"]) for e in result["evidence"]["episodes"]]
    accuracies = [1 / q for q in queries]
    accuracies[2] = 0.7
    assert validate_result(with_accuracies(result, accuracies)) == [
        f"$.evidence.per_episode_accuracy[2]: 0.7 is not a whole number of correct answers out of {queries[2]}, "
        "the queries of the episode ($.evidence.episodes)"]


def with_protocol(result: dict, protocol: str, version: str = "1.2.0") -> dict:
    result = copy.deepcopy(result)
    result["benchmark"]["protocol"], result["schema_version"] = protocol, version
    return result


def test_the_protocol_must_be_the_episode_specs_key():
    result = fewshot()
    assert result["benchmark"]["protocol"] == "5-way-1-shot-15-query"
    assert validate_result(with_protocol(result, "5-way 1-shot 15-query")) == [
        "$.benchmark.protocol: '5-way 1-shot 15-query' contradicts $.benchmark.episode_spec, whose protocol is "
        "'5-way-1-shot-15-query'"]
    assert validate_result(with_protocol(result, "5-way-5-shot-15-query")) == [
        "$.benchmark.protocol: '5-way-5-shot-15-query' contradicts $.benchmark.episode_spec, whose protocol is "
        "'5-way-1-shot-15-query'"]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0", "1.1.7", "1.01.0"])
def test_files_before_1_2_may_spell_the_protocol_the_old_way(version):
    result = fewshot()
    assert validate_result(with_protocol(result, "5-way 1-shot 15-query", version)) == []
    assert validate_result(with_protocol(result, "5-way-1-shot-15-query", version)) == []
    assert validate_result(with_protocol(result, "20-way 1-shot 15-query", version)) == [
        "$.benchmark.protocol: '20-way 1-shot 15-query' contradicts $.benchmark.episode_spec, whose protocol is "
        "'5-way-1-shot-15-query' or '5-way 1-shot 15-query'"]


def test_a_variable_spec_protocol_is_its_key():
    spec = VariableEpisodeSpec(min_way=2, max_way=4, max_query=3, max_support=8)
    result = fewshot_result_with_episodes(spec)
    assert result["benchmark"]["protocol"] == spec.key and validate_result(result) == []
    for version in ("1.1.0", "1.2.0"):
        (problem,) = validate_result(with_protocol(result, "variable", version))
        assert problem == (f"$.benchmark.protocol: 'variable' contradicts $.benchmark.episode_spec, whose protocol is "
                           f"{spec.key!r}")


def test_a_spec_the_harness_cannot_build_is_refused():
    result = fewshot_result_with_episodes(VariableEpisodeSpec(min_way=2, max_way=4, max_query=3, max_support=8))
    result["benchmark"]["episode_spec"]["min_way"] = 5  # more than max_way
    assert validate_result(result) == ["$.benchmark.episode_spec: not an episode spec the harness can build: "
                                       "VariableEpisodeSpec needs 2 <= min_way <= max_way"]
    result = fewshot()
    result["benchmark"]["episode_spec"]["n_ways"] = 5  # a key spec_from_dict does not take
    (problem,) = validate_result(result)
    assert problem.startswith("$.benchmark.episode_spec: ") and "is not valid under any of the given schemas" in problem


def test_there_must_be_classes_enough_for_the_way():
    result = fewshot()
    result["episodes"]["n_classes"] = 4
    assert validate_result(result) == ["$.episodes.n_classes: 4 classes cannot make the 5-way episodes of "
                                       "$.benchmark.episode_spec"]
    result["episodes"]["n_classes"] = 5
    assert validate_result(result) == []
    variable = fewshot_result_with_episodes(VariableEpisodeSpec(min_way=3, max_way=4, max_query=3, max_support=8))
    variable["episodes"]["n_classes"] = 2
    assert validate_result(variable) == ["$.episodes.n_classes: 2 classes cannot make the 3-way episodes of "
                                         "$.benchmark.episode_spec"]


@pytest.mark.parametrize(("name", "definition"), [("mean_accuracy", MEAN_DEFINITION), ("ci95", CI95_DEFINITION)])
def test_few_shot_metric_definitions_are_the_harnesss(name, definition):
    result = fewshot()
    result["metrics"][name]["definition"] = "median(per_episode_accuracy)"
    assert validate_result(result) == [f"$.metrics.{name}.definition: 'median(per_episode_accuracy)' is not the "
                                       f"definition the value is checked against, {definition!r}"]


# --- fuzz: any string anywhere -------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(list(BAD_CHARACTERS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(place=st.sampled_from(["value", "key", "name", "protocol", "root-key"]), text=any_text,
       nested=st.booleans())
def test_any_string_anywhere_is_checked_never_raises(place, text, nested):
    result = fewshot()
    if place == "value":
        result["method"]["params"]["x"] = [text] if nested else text
    elif place == "key":
        result["training"][text] = {text: 1} if nested else 1
    elif place == "root-key":
        result[text] = None
    else:
        result["benchmark"][place] = text
    problems = validate_result(result)  # must not raise
    assert all(isinstance(p, str) and p.startswith("$") and not UNPRINTABLE.search(p) for p in problems)
    if UNPRINTABLE.search(text):
        assert problems and all(" contains " in p for p in problems)
