"""The continual protocol through the runner: R and b, resume after a crash, checks, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from protobench.benchmarks.cli import main
from protobench.benchmarks.registry import register_method
from protobench.benchmarks.runner import SuiteError, check_suite, run_suite
from protobench.benchmarks.suite import load_suite
from protobench.continual.learners.finetune import FineTune
from protobench.leaderboard.validate import validate_file

SUITE = """
name = "tiny-continual"
kind = "continual"
benchmarks = ["split-digits"]
seeds = [SEEDS]

[[methods]]
label = "ft"
method = "METHOD"
params = { backbone = "mlp", epochs = 2, batch_size = 32, lr = 0.05 }
"""


class Crash(RuntimeError):
    """Raised by :class:`CrashingFineTune` to stand for a killed run."""


class CrashingFineTune(FineTune):
    """Fine-tuning that raises when it reaches experience ``crash_at`` (None: never)."""

    crash_at: int | None = None

    def train_experience(self, experience, context):
        if experience.index == CrashingFineTune.crash_at:
            raise Crash(f"killed before experience {experience.index}")
        return super().train_experience(experience, context)


register_method("crashing-finetune", kind="continual")(CrashingFineTune)


def suite_file(folder: Path, method: str = "finetune", seeds: str = "0", extra: str = "") -> Path:
    path = folder / "tiny-continual.toml"
    path.write_text(SUITE.replace("METHOD", method).replace("SEEDS", seeds) + extra)
    return path


def run(folder: Path, suite: Path) -> list[dict]:
    return run_suite(load_suite(suite), out_dir=folder, data_root=None, device="cpu", progress=False)


def test_a_unit_writes_one_valid_result_with_R_b_and_the_task_aware_matrix(tmp_path):
    (result,) = run(tmp_path / "out", suite_file(tmp_path))
    (path,) = (tmp_path / "out").glob("*.json")
    assert path.name == "split-digits__ft__seed0.json" and validate_file(path) == []
    R = np.array(result["evidence"]["accuracy_matrix"])
    aware = np.array(result["evidence"]["task_aware_accuracy_matrix"])
    assert R.shape == aware.shape == (5, 5) and len(result["evidence"]["untrained_accuracy"]) == 5
    assert np.all(R[np.triu_indices(5, k=1)] == 0.0)  # class-IL: unseen classes are never predicted
    assert np.diag(R).mean() > 0.7 and np.all(aware >= R - 1e-12)  # fewer candidates, never less accurate
    spec = result["benchmark"]["stream_spec"]
    assert spec["scenario"] == "class-incremental" and spec["seed"] == result["seeds"]["stream"]
    assert sorted(c for group in spec["class_order"] for c in group) == list(range(10))
    assert result["training"]["chosen_on"] == "not tuned: the suite's params"
    assert len(result["training"]["experiences"]) == 5


def test_seeds_draw_different_class_orders_and_the_same_seed_the_same_result(tmp_path):
    first = run(tmp_path / "a", suite_file(tmp_path, seeds="0, 1"))
    again = run(tmp_path / "b", suite_file(tmp_path, seeds="0"))
    assert first[0]["benchmark"]["stream_spec"]["class_order"] != first[1]["benchmark"]["stream_spec"]["class_order"]
    assert again[0]["evidence"] == first[0]["evidence"]


def test_a_crashed_run_resumes_after_the_last_finished_experience_with_identical_results(tmp_path, monkeypatch,
                                                                                       capsys):
    suite = suite_file(tmp_path, method="crashing-finetune")
    straight = run(tmp_path / "straight", suite)
    monkeypatch.setattr(CrashingFineTune, "crash_at", 3)
    with pytest.raises(Crash):
        run(tmp_path / "crashed", suite)
    (checkpoint,) = (tmp_path / "crashed" / "checkpoints").glob("*.partial.pt")
    monkeypatch.setattr(CrashingFineTune, "crash_at", 0)  # training experience 0 again would crash
    capsys.readouterr()
    resumed = run_suite(load_suite(suite), out_dir=tmp_path / "crashed", data_root=None, device="cpu")
    assert "resuming after experience 3" in capsys.readouterr().out
    assert resumed[0]["evidence"] == straight[0]["evidence"]
    assert resumed[0]["metrics"] == straight[0]["metrics"]
    assert not checkpoint.exists()


class CountingFineTune(FineTune):
    """Fine-tuning that counts its predict calls; ``uses_task_id`` set per test."""

    calls = 0

    def predict(self, x, task_id=None):
        CountingFineTune.calls += 1
        return super().predict(x, task_id)


register_method("counting-finetune", kind="continual")(CountingFineTune)


def test_a_learner_that_ignores_task_ids_is_scored_by_one_predict_call_per_batch(tmp_path, monkeypatch):
    suite = suite_file(tmp_path, method="counting-finetune")
    calls, evidence = {}, {}
    for uses_task_id in (True, False):
        monkeypatch.setattr(CountingFineTune, "uses_task_id", uses_task_id)
        CountingFineTune.calls = 0
        (result,) = run(tmp_path / str(uses_task_id), suite)
        calls[uses_task_id], evidence[uses_task_id] = CountingFineTune.calls, result["evidence"]
    assert evidence[False] == evidence[True]  # the same R, task-aware R and b
    untrained = calls[False] // 6  # b: one call per test batch, then one per experience (both protocols)
    assert calls[True] == untrained + 5 * 2 * untrained  # two calls per batch after each experience


def test_an_unusable_checkpoint_is_set_aside_and_the_unit_starts_over(tmp_path, monkeypatch, capsys):
    suite = suite_file(tmp_path, method="crashing-finetune")
    monkeypatch.setattr(CrashingFineTune, "crash_at", 2)
    with pytest.raises(Crash):
        run(tmp_path / "out", suite)
    (checkpoint,) = (tmp_path / "out" / "checkpoints").glob("*.partial.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    monkeypatch.setattr(CrashingFineTune, "crash_at", None)
    (result,) = run(tmp_path / "out", suite)
    assert "set aside" in capsys.readouterr().err
    assert validate_file(tmp_path / "out" / "split-digits__ft__seed0.json") == []
    assert len(result["training"]["experiences"]) == 5


def test_a_finished_unit_is_reused(tmp_path, capsys):
    suite = suite_file(tmp_path)
    (first,) = run(tmp_path / "out", suite)
    capsys.readouterr()
    (second,) = run_suite(load_suite(suite), out_dir=tmp_path / "out", data_root=None, device="cpu")
    assert "skipped" in capsys.readouterr().out and second["run"]["id"] == first["run"]["id"]


def test_a_validation_run_holds_out_part_of_the_training_data(tmp_path):
    suite = tmp_path / "val.toml"
    suite.write_text(suite_file(tmp_path).read_text().replace('method = "finetune"',
                                                               'method = "finetune"\nsplit = "val"\n'
                                                               'chosen_on = "a sweep on split val"'))
    (result,) = run(tmp_path / "out", suite)
    assert result["benchmark"]["split"] == "val (held out from train)"
    assert (tmp_path / "out" / "split-digits__ft__val__seed0.json").is_file()


@pytest.mark.parametrize(("extra_params", "expected"), [
    ("ewc_lambda = 1.0", "unknown param(s) ewc_lambda; 'finetune' takes"),
    ("epochz = 3", "unknown param(s) epochz"),
])
def test_params_a_learner_does_not_take_are_refused_before_any_data(tmp_path, extra_params, expected):
    path = suite_file(tmp_path)
    path.write_text(path.read_text().replace("lr = 0.05 }", f"lr = 0.05, {extra_params} }}"))
    with pytest.raises(SuiteError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_suite(load_suite(path), None)


def test_an_ewc_param_misspelt_is_refused_through_the_base_class(tmp_path):
    path = suite_file(tmp_path, method="ewc")
    path.write_text(path.read_text().replace("lr = 0.05 }", "lr = 0.05, ewc_lamda = 3.0 }"))
    with pytest.raises(SuiteError, match="unknown param"):
        check_suite(load_suite(path), None)


def test_kinds_do_not_mix(tmp_path):
    fewshot_method = suite_file(tmp_path, method="protonet")
    with pytest.raises(SuiteError, match="'protonet' is a fewshot method, not a continual one"):
        check_suite(load_suite(fewshot_method), None)
    wrong_benchmark = tmp_path / "wrong.toml"
    wrong_benchmark.write_text(suite_file(tmp_path).read_text().replace('"split-digits"', '"omniglot-subset"'))
    with pytest.raises(SuiteError, match="a fewshot benchmark, not continual"):
        check_suite(load_suite(wrong_benchmark), None)
    tests = tmp_path / "tests.toml"
    tests.write_text(suite_file(tmp_path).read_text().replace("seeds = [0]", "seeds = [0]\ntests = [{ n = 1 }]"))
    with pytest.raises(ValueError, match="a continual suite has no test settings"):
        load_suite(tests)


def test_the_cli_runs_a_continual_suite_and_refuses_nproc(tmp_path, capsys):
    suite = suite_file(tmp_path)
    assert main(["run", str(suite), "--nproc", "2", "--out", str(tmp_path / "x")]) == 2
    assert "drop --nproc" in capsys.readouterr().err
    assert main(["run", str(suite), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "task-aware A %" in printed and "split-digits" in printed
    page = (tmp_path / "out" / "site" / "index.html").read_text()
    assert "split-digits class-incremental, 5 experiences" in page
    table = (tmp_path / "out" / "site" / "leaderboard.md").read_text()  # the continual table in Markdown too
    assert "### split-digits: class-incremental, 5 experiences" in table and "| ft | finetune |" in table
    result = json.loads((tmp_path / "out" / "split-digits__ft__seed0.json").read_text())
    assert f"{100 * result['metrics']['average_accuracy']['value']:.2f}" in printed


def test_compare_pairs_continual_configurations_by_seed(tmp_path, capsys):
    extra = """
[[methods]]
label = "ft-slow"
method = "finetune"
params = { backbone = "mlp", epochs = 1, batch_size = 32, lr = 0.01 }
"""
    results = run(tmp_path / "out", suite_file(tmp_path, seeds="0, 1", extra=extra))
    by_label = {label: sorted((r for r in results if r["method"]["configuration"] == label),
                              key=lambda r: r["seeds"]["seed"]) for label in ("ft", "ft-slow")}
    a, b = ([str(tmp_path / "out" / f"split-digits__{label}__seed{s}.json") for s in (0, 1)] for label in by_label)
    assert main(["compare", *a, "--against", *b]) == 0
    printed = capsys.readouterr().out
    differences = [ra["metrics"]["average_accuracy"]["value"] - rb["metrics"]["average_accuracy"]["value"]
                   for ra, rb in zip(by_label["ft"], by_label["ft-slow"], strict=True)]
    half_width = 12.706 * np.std(differences, ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
    line = next(line for line in printed.splitlines() if line.startswith("average_accuracy "))
    assert f"{100 * np.mean(differences):+7.2f}" in line and f"+- {100 * half_width:.2f}" in line, printed
    assert "paired over seeds 0, 1" in printed
    assert main(["compare", a[0], "--against", *b]) == 1  # seed 1 lacks its partner
    assert "different seeds" in capsys.readouterr().err
    assert main(["compare", *a, "--against", a[0], b[0]]) == 1  # B mixes configurations
    assert "mixes configurations" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", *a, b[0]])  # three files without --against: a usage error


class DivergingFineTune(FineTune):
    """Fine-tuning whose record reports a NaN loss (a diverged run) from the second experience on."""

    def train_experience(self, experience, context):
        record = super().train_experience(experience, context)
        return {**record, "loss": math.nan, "curve": [1.0, math.inf]} if experience.index >= 1 else record


register_method("diverging-finetune", kind="continual")(DivergingFineTune)


def test_a_diverged_loss_is_recorded_as_null_and_the_file_stays_valid(tmp_path):
    (result,) = run(tmp_path / "out", suite_file(tmp_path, method="diverging-finetune"))
    (path,) = (tmp_path / "out").glob("*.json")
    assert validate_file(path) == [] and "NaN" not in path.read_text()
    first, second = result["training"]["experiences"][:2]
    assert isinstance(first["loss"], float) and "non_finite" not in first
    assert second["loss"] is None and second["curve"] == [1.0, None]
    assert second["non_finite"] == ["loss", "curve[1]"]
