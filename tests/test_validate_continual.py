"""Result files of kind "continual", the optional few-shot episode list, and hostile input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protobench.continual.metrics import (
    DEFINITIONS,
    TASK_AWARE_AVERAGE_ACCURACY_DEFINITION,
    average_accuracy,
    continual_metrics,
)
from protobench.fewshot import EpisodeSampler, EpisodeSpec, VariableEpisodeSpec
from protobench.fewshot.metrics import CI95_DEFINITION, MEAN_DEFINITION, mean_ci95
from protobench.leaderboard.identity import hashed_configuration, params_hash
from protobench.leaderboard.schema import SCHEMA_VERSION
from protobench.leaderboard.validate import MAX_DEPTH, validate_file, validate_result

R3 = [[0.90, 0.20, 0.10], [0.70, 0.80, 0.30], [0.50, 0.60, 0.95]]
B3 = [0.10, 0.15, 0.05]
TASK_AWARE3 = [[0.95, 0.50, 0.50], [0.90, 0.90, 0.50], [0.85, 0.88, 0.97]]

COMMON = {
    "run": {"id": "unit", "time": "2024-01-01T00:00:00+00:00", "harness_version": "0.1.0", "git_commit": None},
    "method": {"name": "finetune", "version": "1", "backbone": "mlp", "pretraining": None, "params": {"lr": 0.01},
               "params_hash": params_hash({"lr": 0.01}),
               "configuration": hashed_configuration("finetune", {"lr": 0.01})},
    "environment": {"torch": "2.3.0", "cuda": None, "device": "cpu", "device_name": "x86_64"},
}


def continual_result(R=R3, b=B3, task_aware=None, class_order="default", scenario="class-incremental") -> dict:
    """A valid continual result for accuracy matrix ``R`` and untrained accuracies ``b``."""
    T = len(R)
    if class_order == "default":
        class_order = [[2 * t, 2 * t + 1] for t in range(T)]
    metrics = {name: {"value": value, "definition": DEFINITIONS[name]}
               for name, value in continual_metrics(R, b).items()}
    evidence = {"accuracy_matrix": R, "untrained_accuracy": b}
    if task_aware is not None:
        evidence["task_aware_accuracy_matrix"] = task_aware
        metrics["task_aware_average_accuracy"] = {"value": average_accuracy(task_aware),
                                                  "definition": TASK_AWARE_AVERAGE_ACCURACY_DEFINITION}
    return copy.deepcopy({
        "schema_version": SCHEMA_VERSION,
        "kind": "continual",
        **COMMON,
        "benchmark": {"name": "split-toy", "dataset": "toy", "dataset_checksum": None, "split": "test",
                      "protocol": f"{scenario}, {T} experiences",
                      "stream_spec": {"scenario": scenario, "n_experiences": T, "class_order": class_order,
                                      "seed": 0}},
        "seeds": {"train": 1},
        "evidence": evidence,
        "metrics": metrics,
        "budget": {"train_wall_seconds": 1.5, "eval_wall_seconds": 0.2, "peak_rss_mib": None, "peak_gpu_mib": None},
    })


def fewshot_result_with_episodes(spec=None) -> dict:
    """A valid few-shot result (built without torch) that includes its episodes."""
    spec = spec or EpisodeSpec(3, 1, 2)
    sampler = EpisodeSampler(np.repeat(np.arange(8), 12), spec, seed=4, n_episodes=6)
    episodes = list(sampler.episodes())
    queries = [len(e.query) for e in episodes]  # an accuracy is a whole number of correct answers out of these
    accuracies = [(3 * i + 1) % (q + 1) / q for i, q in enumerate(queries)]
    mean, ci95 = mean_ci95(accuracies)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "fewshot",
        **copy.deepcopy(COMMON),
        "benchmark": {"name": "toy", "dataset": "toy", "split": "test", "protocol": spec.key,
                      "episode_spec": spec.to_dict()},
        "seeds": {"episodes": 4},
        "episodes": {"n": len(episodes), "digest": sampler.digest(), "n_classes": 8},
        "evidence": {
            "per_episode_accuracy": accuracies,
            "episodes": [{"classes": e.classes.tolist(), "support": e.groups("support"), "query": e.groups("query")}
                         for e in episodes],
        },
        "metrics": {"mean_accuracy": {"value": mean, "definition": MEAN_DEFINITION},
                    "ci95": {"value": ci95, "definition": CI95_DEFINITION}},
        "budget": {"train_episodes": 0, "eval_wall_seconds": 0.1},
    }


def starts(problems: list[str], prefix: str) -> bool:
    return any(problem.startswith(prefix) for problem in problems)


# --- valid files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["class-incremental", "task-incremental", "domain-incremental", "online"])
def test_built_continual_results_are_valid(scenario):
    assert validate_result(continual_result(scenario=scenario)) == []
    assert validate_result(continual_result(task_aware=TASK_AWARE3, scenario=scenario)) == []
    assert validate_result(continual_result(class_order=None, scenario=scenario)) == []


def test_single_experience_result_has_null_metrics_and_is_valid():
    result = continual_result(R=[[0.8]], b=[0.1])
    assert result["metrics"]["forgetting"]["value"] is None
    assert validate_result(result) == []


def test_any_1x_schema_version_is_accepted_and_2x_is_not():
    assert SCHEMA_VERSION == "1.2.0"
    for version, ok in [("1.0.0", True), ("1.1.0", True), ("1.9.12", True), ("2.0.0", False), ("1.1", False)]:
        result = continual_result()
        result["schema_version"] = version
        assert (validate_result(result) == []) is ok, version


def test_continual_file_written_to_disk_validates(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(continual_result(task_aware=TASK_AWARE3)))
    assert validate_file(path) == []


# --- recomputation -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*DEFINITIONS, "task_aware_average_accuracy"])
def test_each_tampered_metric_is_named(name):
    result = continual_result(task_aware=TASK_AWARE3)
    true_value = result["metrics"][name]["value"]
    result["metrics"][name]["value"] += 0.01
    claimed = result["metrics"][name]["value"]
    assert validate_result(result) == [f"$.metrics.{name}.value: {claimed!r} does not match {true_value!r} "
                                       "recomputed from the evidence"]


def test_tampered_evidence_is_caught_by_recomputation():
    result = continual_result()
    result["evidence"]["accuracy_matrix"][2][0] = 0.9  # final accuracy on experience 0 raised, metrics kept
    problems = validate_result(result)
    for name in ("average_accuracy", "average_incremental_accuracy", "forgetting", "bwt"):
        assert starts(problems, f"$.metrics.{name}.value:")
    assert not starts(problems, "$.metrics.fwt")


def test_null_must_match_null():
    result = continual_result()
    result["metrics"]["forgetting"]["value"] = None  # defined for T = 3
    assert validate_result(result) == ["$.metrics.forgetting.value: None does not match 0.30000000000000004 "
                                       "recomputed from the evidence"]
    single = continual_result(R=[[0.8]], b=[0.1])
    single["metrics"]["bwt"]["value"] = 0.0  # undefined for T = 1
    assert validate_result(single) == ["$.metrics.bwt.value: 0.0 does not match None recomputed from the evidence"]


def test_huge_or_infinite_claimed_values_are_mismatches_not_crashes():
    for value in (10**400, -(10**400), float("inf")):
        result = continual_result()
        result["metrics"]["fwt"]["value"] = value
        problems = validate_result(result)
        assert len(problems) == 1 and problems[0].startswith("$.metrics.fwt.value:")


def test_a_definition_other_than_the_computed_one_is_rejected():
    result = continual_result()
    result["metrics"]["forgetting"]["definition"] = "max_{l<T-1} R[l][j] - R[T-1][j]"
    assert starts(validate_result(result), "$.metrics.forgetting.definition:")


# --- shapes --------------------------------------------------------------------------------------


def test_matrix_size_must_match_the_number_of_experiences():
    result = continual_result()
    result["benchmark"]["stream_spec"]["n_experiences"] = 4
    problems = validate_result(result)
    assert starts(problems, "$.evidence.accuracy_matrix: 3 rows, expected 4")
    assert starts(problems, "$.evidence.accuracy_matrix[0]: 3 entries, expected 4")
    assert starts(problems, "$.evidence.untrained_accuracy: 3 entries, expected 4")
    assert starts(problems, "$.benchmark.stream_spec.class_order: 3 experiences listed, expected 4")


def test_ragged_rows_and_short_baselines_are_named():
    result = continual_result(task_aware=TASK_AWARE3)
    result["evidence"]["accuracy_matrix"][1].append(0.5)
    result["evidence"]["task_aware_accuracy_matrix"][2].pop()
    result["evidence"]["untrained_accuracy"].pop()
    assert validate_result(result) == [
        "$.evidence.accuracy_matrix[1]: 4 entries, expected 3 ($.benchmark.stream_spec.n_experiences)",
        "$.evidence.task_aware_accuracy_matrix[2]: 2 entries, expected 3 ($.benchmark.stream_spec.n_experiences)",
        "$.evidence.untrained_accuracy: 2 entries, expected 3 ($.benchmark.stream_spec.n_experiences)",
    ]


def test_task_aware_metric_and_matrix_come_together():
    result = continual_result(task_aware=TASK_AWARE3)
    del result["evidence"]["task_aware_accuracy_matrix"]
    assert starts(validate_result(result), "$.metrics.task_aware_average_accuracy: reported without")
    result = continual_result(task_aware=TASK_AWARE3)
    del result["metrics"]["task_aware_average_accuracy"]
    assert starts(validate_result(result), "$.evidence.task_aware_accuracy_matrix: present but")


# --- schema messages stay readable ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["benchmark"].pop("stream_spec"), "$.benchmark: 'stream_spec' is a required property"),
        (lambda r: r["benchmark"]["stream_spec"].__setitem__("scenario", "batch"),
         "$.benchmark.stream_spec.scenario: 'batch' is not one of"),
        (lambda r: r["evidence"]["accuracy_matrix"][1].__setitem__(2, 1.5),
         "$.evidence.accuracy_matrix[1][2]: 1.5 is greater than the maximum of 1"),
        (lambda r: r["evidence"].pop("untrained_accuracy"), "$.evidence: 'untrained_accuracy' is a required property"),
        (lambda r: r["metrics"].pop("fwt"), "$.metrics: 'fwt' is a required property"),
        (lambda r: r["metrics"]["average_accuracy"].__setitem__("value", None),
         "$.metrics.average_accuracy.value: None is not of type 'number'"),
        (lambda r: r["seeds"].pop("train"), "$.seeds: 'train' is a required property"),
        (lambda r: r["budget"].pop("train_wall_seconds"), "$.budget: 'train_wall_seconds' is a required property"),
        (lambda r: r.__setitem__("kind", "lifelong"), "$.kind: 'lifelong' is not one of ['fewshot', 'continual']"),
    ],
)
def test_one_mistake_gives_one_readable_message(mutate, expected):
    result = continual_result()
    mutate(result)
    problems = validate_result(result)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_continual_files_need_no_episodes_but_few_shot_files_still_do():
    result = continual_result()
    assert "episodes" not in result and validate_result(result) == []
    fewshot = fewshot_result_with_episodes()
    del fewshot["episodes"]
    assert validate_result(fewshot) == ["$: 'episodes' is a required property"]


def test_few_shot_evidence_is_not_accepted_for_a_continual_file():
    result = continual_result()
    result["evidence"] = {"per_episode_accuracy": [0.5, 0.5]}
    assert validate_result(result) == ["$.evidence: 'accuracy_matrix' is a required property",
                                       "$.evidence: 'untrained_accuracy' is a required property"]


# --- few-shot: included episodes -----------------------------------------------------------------


@pytest.mark.parametrize("spec", [EpisodeSpec(3, 1, 2), VariableEpisodeSpec(min_way=2, max_way=4, max_query=3,
                                                                            max_support=8)])
def test_included_episodes_match_their_digest(spec):
    assert validate_result(fewshot_result_with_episodes(spec)) == []


def test_altered_episodes_are_caught_by_the_digest():
    result = fewshot_result_with_episodes()
    result["evidence"]["episodes"][3]["query"][0][0] += 1
    problems = validate_result(result)
    assert len(problems) == 1 and problems[0].startswith("$.episodes.digest: ")
    assert problems[0].endswith("recomputed from $.evidence.episodes")


def test_included_episodes_must_be_well_formed():
    result = fewshot_result_with_episodes()
    result["evidence"]["episodes"][1]["classes"].pop()
    assert validate_result(result) == ["$.evidence.episodes[1]: classes, support and query need one entry per "
                                       "class, got 2, 3 and 3"]
    result = fewshot_result_with_episodes()
    result["evidence"]["episodes"].pop()
    problems = validate_result(result)
    assert problems[0] == "$.evidence.episodes: holds 5 episodes but $.episodes.n is 6"
    assert [p.split(":")[0] for p in problems] == ["$.evidence.episodes", "$.episodes.digest"]
    result = fewshot_result_with_episodes()
    result["evidence"]["episodes"][0]["support"][0] = [-1]
    assert starts(validate_result(result), "$.evidence.episodes[0].support[0][0]: -1 is less than the minimum")


# --- hostile input -------------------------------------------------------------------------------


def nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_deep_nesting_is_rejected_without_recursion():
    for depth in (MAX_DEPTH + 5, 50_000):
        result = continual_result()
        result["method"]["params"] = {"x": nested_list(depth)}
        assert validate_result(result) == [f"$: lists and objects nest more than {MAX_DEPTH} levels deep"]
        assert validate_result(nested_list(depth))[0].startswith("$")


def test_long_schema_messages_are_shortened():
    result = continual_result()
    result["evidence"]["untrained_accuracy"] = "x" * 1000  # within the bound on any string; the schema quotes it
    (problem,) = validate_result(result)
    assert problem.startswith("$.evidence.untrained_accuracy: 'xxx") and len(problem) < 400


any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates and controls included
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | any_text
                | st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 0, 1, 0.5, 1.0000001]))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)
accuracy_like = st.floats(min_value=-0.5, max_value=1.5, allow_nan=False) | st.sampled_from([0, 1, 0.0, 1.0])
wrong_shapes = (
    st.lists(st.lists(accuracy_like, max_size=5), max_size=5)  # matrices of any shape, ragged included
    | st.lists(accuracy_like, max_size=5)
    | st.lists(st.lists(st.lists(accuracy_like, max_size=2), max_size=2), max_size=2)
)
deep_lists = st.integers(min_value=1, max_value=2 * MAX_DEPTH).map(nested_list)
replacements = json_values | wrong_shapes | deep_lists


@st.composite
def mutated_results(draw):
    """A valid result (continual, or few-shot with episodes) with a subtree replaced or removed."""
    result = draw(st.sampled_from(["continual", "continual_t1", "fewshot"]))
    result = {"continual": lambda: continual_result(task_aware=TASK_AWARE3),
              "continual_t1": lambda: continual_result(R=[[0.8]], b=[0.1]),
              "fewshot": fewshot_result_with_episodes}[result]()
    if draw(st.integers(min_value=0, max_value=19)) == 0:
        return draw(replacements)  # not even an object
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        parent, key, node = None, None, result
        for _ in range(draw(st.sampled_from([1, 2, 3, 3, 4, 4, 5, 6]))):
            if isinstance(node, dict) and node:
                step = draw(st.sampled_from(sorted(node)))
            elif isinstance(node, list) and node:
                step = draw(st.integers(min_value=0, max_value=len(node) - 1))
            else:
                break
            parent, key, node = node, step, node[step]
        if parent is None:  # an earlier mutation left an empty or scalar root
            break
        if parent is not result and isinstance(parent, dict) and draw(st.integers(min_value=0, max_value=3)) == 0:
            del parent[key]
        else:
            parent[key] = draw(replacements)
    return result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(result=mutated_results())
def test_mutated_results_never_crash_the_validator(result):
    problems = validate_result(result)  # must not raise
    assert isinstance(problems, list)
    assert all(isinstance(p, str) and p.startswith("$") for p in problems)
