"""Result files: the schema, the validator's recomputation, hostile input, and the CLI verb."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import make_fewshot_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protobench.benchmarks.cli import main
from protobench.leaderboard.validate import validate_file, validate_result


@pytest.fixture(scope="module")
def valid_result() -> dict:
    return make_fewshot_result("toy-method", 1, np.random.default_rng(0).uniform(0.3, 1.0, size=50))


def test_built_result_is_valid(valid_result):
    assert validate_result(valid_result) == []


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
