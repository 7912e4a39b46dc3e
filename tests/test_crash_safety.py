"""Crash safety of a run's files: atomic checkpoint and result writes, unusable checkpoints set
aside and retrained, and one lock per unit so that two runs into one folder never train it twice."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from protobench.benchmarks.cli import main
from protobench.benchmarks.results import write_json_atomic
from protobench.benchmarks.runner import Checkpoints, unit_lock
from protobench.fewshot.backbones import Conv4
from protobench.fewshot.training import TrainingContext, state_signature
from protobench.leaderboard.validate import validate_file

UNIT = "omniglot-subset__protonet__seed0"
SUITE = """
name = "crash"
benchmarks = ["omniglot-subset"]
seeds = [0]
tests = [{ n_way = 5, n_shot = 1, n_query = 5, episodes = 64 }]

[[methods]]
label = "protonet"
method = "protonet"
params = { lr_step = 100 }
train = { n_way = 5, n_shot = 1, n_query = 5, episodes = TRAIN_EPISODES, checkpoint_every = 2 }
"""


def write_suite(folder: Path, train_episodes: int = 6) -> Path:
    path = folder / "crash.toml"
    path.write_text(SUITE.replace("TRAIN_EPISODES", str(train_episodes)))
    return path


def evidence(out: Path) -> dict[str, list[float]]:
    return {p.name: json.loads(p.read_text())["evidence"] for p in sorted(out.glob("*.json"))}


def only(paths) -> Path:
    [path] = list(paths)
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The tiny suite run once: its file, its output folder and the evidence of its results."""
    folder = tmp_path_factory.mktemp("first_run")
    suite, out = write_suite(folder), folder / "out"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    return suite, out, evidence(out)


@pytest.fixture
def rerun(tmp_path, first_run, capsys) -> tuple[Path, Path, Path, dict]:
    """A copy of the first run's output folder without its result files, so that running the suite
    into it again loads the unit's checkpoints: (suite, output folder, final checkpoint, evidence)."""
    suite, out, first = first_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for result in copy.glob("*.json"):
        result.unlink()
    capsys.readouterr()
    return suite, copy, only(copy.glob("checkpoints/*.final.pt")), first


# ---------------------------------------------------------------- atomic writes


def save_final(path: Path, value: int) -> None:
    Checkpoints(path, path.with_name("unit.partial.pt")).save_final({"w": torch.full((1 << 16,), value)}, {"v": value})


def save_partial(path: Path, value: int) -> None:
    TrainingContext(n_episodes=10, seed=0, checkpoint_path=path).save_checkpoint({"w": torch.full((1 << 16,), value)})


SAVERS = pytest.mark.parametrize("save", [save_final, save_partial], ids=["final", "partial"])


@SAVERS
def test_concurrent_checkpoint_writers_never_collide(tmp_path, save):
    path = tmp_path / "checkpoints" / "unit.final.pt"
    errors: list[BaseException] = []

    def writer(value: int) -> None:
        try:
            for _ in range(50):
                save(path, value)
        except BaseException as error:  # noqa: B036 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(value,)) for value in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "temporary files were left behind"
    assert torch.load(path, weights_only=True) is not None


@SAVERS
def test_a_failed_checkpoint_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, save):
    path = tmp_path / "checkpoints" / "unit.final.pt"
    save(path, 1)
    before = path.read_bytes()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    save(path, 2)
    assert synced, "the checkpoint was renamed into place without being flushed to disk"

    def disk_full(obj, target, *args, **kwargs):
        (target.write if hasattr(target, "write") else Path(target).write_bytes)(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    after_good_write = path.read_bytes()
    assert after_good_write != before
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save(path, 3)
    assert path.read_bytes() == after_good_write
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_concurrent_json_writers_never_fail_or_leave_temporaries(tmp_path):
    path = tmp_path / "results" / "unit.json"
    errors: list[BaseException] = []

    def writer(who: int) -> None:
        try:
            for i in range(200):
                write_json_atomic(path, {"writer": who, "i": i, "padding": "x" * 4096})
        except BaseException as error:  # noqa: B036 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(who,)) for who in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert json.loads(path.read_text())["i"] == 199


# ---------------------------------------------------------------- unusable checkpoints


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(3000))


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def missing_keys(path: Path) -> None:
    torch.save({"model": {"weight": torch.zeros(3)}, "training": {"episodes": 6}}, path)


def wrong_shapes(path: Path) -> None:
    saved = torch.load(path, weights_only=True)
    saved["model"] = Conv4(3).state_dict()  # a colour model: the first convolution has 3 input channels
    torch.save(saved, path)


class Foreign:
    """An arbitrary object: a pickle of it is refused by ``torch.load(weights_only=True)``."""


def refused_pickle(path: Path) -> None:
    torch.save({"model": Foreign(), "training": {}}, path)


def not_a_dict(path: Path) -> None:
    torch.save([1, 2, 3], path)


CORRUPTIONS = pytest.mark.parametrize(
    "corrupt", [random_bytes, truncated, missing_keys, wrong_shapes, refused_pickle, not_a_dict],
    ids=["random-bytes", "truncated", "missing-keys", "wrong-shapes", "refused-pickle", "not-a-dict"])


def assert_one_line_about(path: Path, err: str) -> None:
    lines = [line for line in err.splitlines() if str(path) in line]
    assert len(lines) == 1, f"expected one line naming {path}:\n{err}"
    assert "set aside" in lines[0]
    assert "Traceback" not in err


@CORRUPTIONS
def test_an_unusable_final_checkpoint_is_set_aside_and_the_unit_retrained(rerun, capsys, corrupt):
    suite, out, final, first = rerun
    corrupt(final)
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    assert_one_line_about(final, capsys.readouterr().err)
    aside = only(final.parent.glob(final.name + ".corrupt-*"))
    assert aside.stat().st_size > 0
    assert torch.load(final, weights_only=True)["training"]["episodes"] == 6  # retrained and rewritten
    assert evidence(out) == first  # the same training again: the same weights and results
    assert all(validate_file(p) == [] for p in out.glob("*.json"))


def test_a_final_checkpoint_that_is_set_aside_twice_keeps_both_copies(rerun):
    suite, out, final, _ = rerun
    for round_ in range(2):
        for result in out.glob("*.json"):
            result.unlink()
        final.write_bytes(b"garbage %d" % round_)
        assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.read_bytes() for p in final.parent.glob(final.name + ".corrupt-*")) == [b"garbage 0",
                                                                                            b"garbage 1"]


def foreign_partial(path: Path) -> None:
    """A well-formed training checkpoint, but of another model (3 input channels)."""
    model = Conv4(3).state_dict()
    TrainingContext(n_episodes=6, seed=0, checkpoint_path=path, signature=state_signature(model)).save_checkpoint(
        {"model": model, "optimizer": {}, "schedule": {}, "best": {}, "episode": 2, "curve": [], "seconds": 0.0})


def raw_state(path: Path) -> None:
    """A torch file holding a bare state, as written before checkpoints had a format."""
    torch.save({"model": Conv4(1).state_dict(), "episode": 2}, path)


@pytest.mark.parametrize("corrupt", [random_bytes, refused_pickle, not_a_dict, raw_state, foreign_partial],
                         ids=["random-bytes", "refused-pickle", "not-a-dict", "raw-state", "foreign-model"])
def test_an_unusable_training_checkpoint_is_set_aside_and_training_restarts(rerun, capsys, corrupt):
    suite, out, final, first = rerun
    partial = final.with_name(final.name.replace(".final.pt", ".partial.pt"))
    final.unlink()
    corrupt(partial)
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 0
    assert_one_line_about(partial, capsys.readouterr().err)
    only(partial.parent.glob(partial.name + ".corrupt-*"))
    assert not partial.exists()
    assert evidence(out) == first  # trained from scratch: the same weights as the first run


def test_load_checkpoint_returns_a_good_state_and_sets_aside_the_rest(tmp_path):
    path = tmp_path / "unit.partial.pt"
    lines: list[str] = []
    model = Conv4(1).state_dict()
    context = TrainingContext(n_episodes=6, seed=0, checkpoint_path=path, signature=state_signature(model),
                              notice=lines.append)
    assert context.load_checkpoint() is None and lines == []  # nothing saved yet: nothing to say
    context.save_checkpoint({"model": model, "episode": 4})
    loaded = context.load_checkpoint()
    assert loaded["episode"] == 4 and torch.equal(loaded["model"]["0.0.weight"], model["0.0.weight"])
    path.write_bytes(pickle.dumps({"episode": 4}, protocol=2))  # a pickle, not a torch file
    assert context.load_checkpoint() is None
    assert len(lines) == 1 and str(path) in lines[0] and "starts from episode 0" in lines[0]
    assert not path.exists() and len(list(tmp_path.glob("unit.partial.pt.corrupt-*"))) == 1


# ---------------------------------------------------------------- one training per unit


def test_two_runs_into_one_folder_train_a_unit_once(tmp_path):
    suite, out = write_suite(tmp_path, train_episodes=20), tmp_path / "out"
    command = [sys.executable, "-m", "protobench", "run", str(suite), "--out", str(out), "--threads", "1"]
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    with unit_lock(out, UNIT):  # both runs start while the unit is taken, so both must wait for it
        processes = [subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
        deadline = time.monotonic() + 300
        while not all("waiting" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "the runs never waited for the unit's lock"
            assert all(p.poll() is None for p in processes), "a run went on without waiting for the unit's lock:\n" \
                + "\n".join(log.read_text() for log in logs)
            time.sleep(0.05)
    for process in processes:
        assert process.wait(timeout=600) == 0
    texts = [log.read_text() for log in logs]
    trained = [text for text in texts if f"train {UNIT}:" in text]
    assert len(trained) == 1, "the unit was trained by both runs:\n" + "\n".join(texts)
    assert "all 1 result files exist and validate; skipped" in texts[1 - texts.index(trained[0])]
    [result] = out.glob("*.json")
    assert validate_file(result) == []
    [checkpoint] = (out / "checkpoints").iterdir()  # one final checkpoint; no partial or temporary file
    assert checkpoint.name.startswith(UNIT) and checkpoint.name.endswith(".final.pt")
