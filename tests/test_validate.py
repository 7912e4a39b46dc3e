"""Result files: the schema, the validator's recomputation, hostile input, and the CLI verb."""

from __future__ import annotations

import copy
import hashlib
import json

import numpy as np
import pytest
from conftest import make_fewshot_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protobench.benchmarks.cli import main
from protobench.leaderboard.identity import (
    configuration_of,
    hashed_configuration,
    is_configuration,
    params_hash,
)
from protobench.leaderboard.schema import SCHEMA_VERSION, result_schema
from protobench.leaderboard.validate import validate_file, validate_result


@pytest.fixture(scope="module")
def valid_result() -> dict:
    correct = np.random.default_rng(0).integers(23, 76, size=50)  # of the 5 x 15 queries of an episode
    return make_fewshot_result("toy-method", 1, correct / 75)


def test_built_result_is_valid(valid_result):
    assert validate_result(valid_result) == []


# --- method configuration (schema 1.2.0) ---------------------------------------------------------


def test_schema_version_is_1_2_0_everywhere():
    assert SCHEMA_VERSION == "1.2.0"
    assert result_schema()["$id"].endswith(f"/{SCHEMA_VERSION}")


def test_params_hash_is_sha256_of_canonical_json():
    params = {"lr": 0.001, "name": "réseau", "layers": [64, 64], "nested": {"b": None, "a": True}}
    canonical = '{"layers":[64,64],"lr":0.001,"name":"réseau","nested":{"a":true,"b":null}}'.encode()
    assert params_hash(params) == "sha256:" + hashlib.sha256(canonical).hexdigest()
    assert params_hash(dict(reversed(params.items()))) == params_hash(params)  # key order is irrelevant
    assert params_hash({"lr": 1}) != params_hash({"lr": 1.0})  # JSON text differs
    assert hashed_configuration("protonet", params) == "protonet@" + params_hash(params)[7:19]


@pytest.mark.parametrize(("params", "error"), [
    ({"lr": float("nan")}, ValueError),
    ({"lr": float("inf")}, ValueError),
    ({"x": "\ud800"}, ValueError),  # a lone surrogate is not UTF-8
    ({"lr": np.float32(0.1)}, TypeError),
    ([1, 2], TypeError),
])
def test_params_hash_refuses_what_json_cannot_hold(params, error):
    with pytest.raises(error):
        params_hash(params)


def test_built_result_records_its_configuration(valid_result):
    method = valid_result["method"]
    assert method["params_hash"] == params_hash(method["params"])
    assert is_configuration(method["configuration"]) and configuration_of(valid_result) == method["configuration"]


def with_method(result: dict, **changes) -> dict:
    """A copy of ``result`` with keys of ``method`` replaced (a value of None removes the key)."""
    result = copy.deepcopy(result)
    for key, value in changes.items():
        if value is None:
            result["method"].pop(key, None)
        else:
            result["method"][key] = value
    return result


def test_params_that_disagree_with_their_hash_are_rejected(valid_result):
    changed = with_method(valid_result, params={**valid_result["method"]["params"], "lr": 0.5})
    claimed, actual = valid_result["method"]["params_hash"], params_hash(changed["method"]["params"])
    assert validate_result(changed) == [
        f"$.method.params_hash: {claimed} does not match {actual} recomputed from $.method.params"]
    rehashed = with_method(changed, params_hash=actual, configuration="toy-method-lr0.5")
    assert validate_result(rehashed) == []


def test_unhashable_params_are_reported_not_raised(valid_result):
    problems = validate_result(with_method(valid_result, params={"x": "\ud800"}))
    assert problems == ["$.method.params.x: contains a lone surrogate (U+D800) at index 0"]


def test_a_hashed_configuration_must_carry_its_own_hash(valid_result):
    name, params = valid_result["method"]["name"], valid_result["method"]["params"]
    assert validate_result(with_method(valid_result, configuration=hashed_configuration(name, params))) == []
    forged = f"{name}@{'0' * 12}"
    assert validate_result(with_method(valid_result, configuration=forged)) == [
        f"$.method.configuration: {forged} has the hashed form <method.name>@<12 hex> but the params hash gives "
        f"{hashed_configuration(name, params)}"]
    for label in ("lr-sweep@best", "other@000000000000", f"{name}@0000"):  # labels, not the hashed form
        assert validate_result(with_method(valid_result, configuration=label)) == [], label
    older = with_method(valid_result, configuration=forged, params_hash=None)  # no hash recorded: still checked
    older["schema_version"] = "1.1.0"
    assert [p.split(":")[0] for p in validate_result(older)] == ["$.method.configuration"]


@pytest.mark.parametrize("configuration", ["", "a" * 97, "proto net", "protonet\n", "protonet/1", "protonét"])
def test_configuration_strings_are_bounded(valid_result, configuration):
    assert not is_configuration(configuration)
    problems = validate_result(with_method(valid_result, configuration=configuration))
    assert len(problems) == 1 and problems[0].startswith("$.method.configuration:")


@pytest.mark.parametrize(("version", "required"), [
    ("1.0.0", False), ("1.1.0", False), ("1.1.7", False), ("1.01.3", False),
    ("1.2.0", True), ("1.02.0", True), ("1.3.1", True), ("1.10.0", True), ("1.100.0", True),
])
def test_configuration_and_hash_are_required_from_1_2_0(valid_result, version, required):
    bare = with_method(valid_result, configuration=None, params_hash=None)
    bare["schema_version"] = version
    expected = ["$.method: 'configuration' is a required property",
                "$.method: 'params_hash' is a required property"] if required else []
    assert sorted(validate_result(bare)) == expected
    valid_result = copy.deepcopy(valid_result)
    valid_result["schema_version"] = version
    assert validate_result(valid_result) == []  # an older file may carry the fields too


def test_configuration_of_older_files_falls_back_to_the_label_then_the_name(valid_result):
    bare = with_method(valid_result, configuration=None, params_hash=None)
    assert configuration_of(bare) == valid_result["method"]["name"]
    labelled = with_method(bare, params={**bare["method"]["params"], "label": "my-run"})
    assert configuration_of(labelled) == "my-run"
    not_a_string = with_method(bare, params={**bare["method"]["params"], "label": 3})
    assert configuration_of(not_a_string) == valid_result["method"]["name"]
    assert configuration_of(with_method(labelled, configuration="recorded")) == "recorded"


def test_mean_that_disagrees_with_the_evidence_is_named(valid_result):
    result = copy.deepcopy(valid_result)
    result["metrics"]["mean_accuracy"]["value"] += 0.01
    problems = validate_result(result)
    assert len(problems) == 1 and problems[0].startswith("$.metrics.mean_accuracy.value:")


def test_ci_and_episode_count_are_recomputed(valid_result):
    result = copy.deepcopy(valid_result)
    result["metrics"]["ci95"]["value"] *= 0.5
    result["episodes"]["n"] = 49
    problems = validate_result(result)
    assert any(p.startswith("$.metrics.ci95.value:") for p in problems)
    assert any(p.startswith("$.episodes.n:") for p in problems)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda r: r.pop("method"), "$: 'method' is a required property"),
        (lambda r: r["evidence"]["per_episode_accuracy"].__setitem__(3, 1.5), "$.evidence.per_episode_accuracy[3]"),
        (lambda r: r["evidence"]["per_episode_accuracy"].__setitem__(0, "1"), "$.evidence.per_episode_accuracy[0]"),
        (lambda r: r["episodes"].__setitem__("digest", "abc"), "$.episodes.digest"),
        (lambda r: r["benchmark"]["episode_spec"].__setitem__("n_way", 1), "$.benchmark.episode_spec"),
        (lambda r: r.__setitem__("schema_version", "2.0.0"), "$.schema_version"),
    ],
)
def test_schema_problems_name_their_json_path(valid_result, mutate, path):
    result = copy.deepcopy(valid_result)
    mutate(result)
    assert any(problem.startswith(path) for problem in validate_result(result))


def test_files_that_are_not_results(tmp_path):
    cases = {"garbage.json": b"\x00\xff\xfe not json", "nan.json": b'{"a": NaN}', "list.json": b"[1, 2]",
             "deep.json": b"[" * 100000 + b"]" * 100000, "empty.json": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        problems = validate_file(tmp_path / name)
        assert problems and problems[0].startswith("$"), name
    assert validate_file(tmp_path / "missing.json")[0].startswith("$: cannot read file")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["run", "method", "benchmark", "episodes", "evidence", "metrics", "budget",
                                      "value", "n", "digest", "per_episode_accuracy", "episode_spec"]), max_size=3),
       replacement=json_values)
def test_fuzzed_results_are_rejected_cleanly_or_accepted_consistently(valid_result, path, replacement):
    result = copy.deepcopy(valid_result)
    target = result
    for key in path[:-1]:
        target = target.get(key) if isinstance(target, dict) else None
    if isinstance(target, dict) and path:
        target[path[-1]] = replacement
    else:
        result = replacement
    problems = validate_result(result)  # must not raise
    assert all(isinstance(p, str) and p.startswith("$") for p in problems)


def test_validate_verb_exit_codes(tmp_path, valid_result, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(valid_result))
    tampered = copy.deepcopy(valid_result)
    tampered["metrics"]["mean_accuracy"]["value"] = 0.99
    bad.write_text(json.dumps(tampered))
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: ok" in out and f"{bad}: INVALID" in out and "$.metrics.mean_accuracy.value" in out
