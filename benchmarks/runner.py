"""The evaluation runner: what every protocol kind shares.

For each unit (benchmark, method entry, seed) of a suite, the runner

1. asks the suite's protocol (:mod:`protobench.benchmarks.protocols`) which result files the
   unit writes, and skips the unit when each exists, validates and carries the same
   configuration hash (resume; a file from another configuration is recomputed);
2. otherwise takes the unit's lock (:func:`unit_lock`, ``OUT/locks/<unit>.lock``), waiting
   while another run into the same folder holds it, and looks at the result files again: what
   that run finished is reused, never computed twice;
3. loads the benchmark's data once for all its units;
4. lets the protocol train (or reuse) and evaluate the unit, handing it a :class:`RunContext`
   (device, mixed precision, progress, notices, checkpoints) and receiving its results;
5. writes each result file atomically, then releases the lock.

Under ``torchrun`` only rank 0 looks at result files, takes the lock and writes; the other ranks
follow its decisions. The suite is checked completely (:func:`check_suite`) before any data is
loaded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from protobench.benchmarks.distributed import world
from protobench.benchmarks.protocols import protocol_for
from protobench.benchmarks.registry import get_benchmark
from protobench.benchmarks.results import write_json_atomic
from protobench.benchmarks.suite import Suite
from protobench.fewshot.encoders import FeatureCache
from protobench.fewshot.training import CheckpointError, load_torch, save_atomic
from protobench.leaderboard.validate import validate_file

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent runs into one folder are not guarded
    fcntl = None


class SuiteError(ValueError):
    """A suite that cannot run as written, with every problem found."""


@dataclass(frozen=True)
class Checkpoints:
    """A unit's training files: resumable state while training, the final weights after.

    Both names carry the training configuration's hash, so a changed setting never reuses
    weights trained under another one.
    """

    final: Path
    partial: Path

    def save_final(self, state: dict, record: dict) -> None:
        """Write the trained state and its training record atomically (a uniquely named temporary
        file in the same folder, flushed to disk, then renamed)."""
        save_atomic({"model": state, "training": record}, self.final)

    def load_final(self, device: str) -> tuple[dict, dict]:
        """The trained state and training record; :class:`CheckpointError` naming the file when it
        is unreadable or not a final checkpoint."""
        saved = load_torch(self.final, device)
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict) \
                or not isinstance(saved.get("training"), dict):
            raise CheckpointError(f"{self.final}: not a final checkpoint (a dict with 'model' and 'training')")
        return saved["model"], saved["training"]


FEATURE_CACHE_FOLDER = "feature-cache"


@dataclass(frozen=True)
class RunContext:
    """What the runner hands a protocol: output folder, device, thread count, progress."""

    out_dir: Path
    device: str
    threads: int
    progress: bool = True

    def precision(self):
        """Mixed precision (bfloat16 autocast) on CUDA; full precision elsewhere."""
        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @functools.cached_property
    def feature_cache(self) -> FeatureCache:
        """Frozen image encoders' features for this run's units, stored under ``OUT/feature-cache``
        (:mod:`protobench.fewshot.feature_store`), so later runs, seeds and shots reuse them."""
        return FeatureCache(self.out_dir / FEATURE_CACHE_FOLDER)

    def checkpoints(self, unit_name: str, training_hash: str) -> Checkpoints:
        stem = f"{unit_name}__{training_hash.removeprefix('sha256:')[:12]}"
        folder = self.out_dir / "checkpoints"
        return Checkpoints(folder / f"{stem}.final.pt", folder / f"{stem}.partial.pt")

    def say(self, message: str) -> None:
        """A progress line on standard output (rank 0; not with ``--quiet``)."""
        if self.progress and world()[0] == 0:
            print(message, flush=True)

    def notice(self, message: str) -> None:
        """A line on standard error that matters even with ``--quiet`` (rank 0): a checkpoint set
        aside, a wait for another run."""
        if world()[0] == 0:
            print(message, file=sys.stderr, flush=True)

    def unit_lock(self, unit_name: str) -> contextlib.AbstractContextManager:
        """:func:`unit_lock` of ``unit_name`` in the output folder on rank 0; nothing on other ranks."""
        if world()[0] != 0:
            return contextlib.nullcontext()
        return unit_lock(self.out_dir, unit_name, notice=self.notice)


@contextlib.contextmanager
def unit_lock(out_dir: Path, unit_name: str, notice: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``out_dir/locks/<unit_name>.lock`` (``flock``), so that two runs
    into one output folder never train or write the same unit at the same time: the second
    waits, calling ``notice`` with a line saying so, then finds the first one's files.

    The lock is released when the block ends or the process dies; the lock file stays (removing
    it could let a third run lock a new file while the second still waits on the old one). It
    guards processes on one machine, and across machines where the file system shares ``flock``
    (NFSv4 does). Where the file system refuses locks (``ENOLCK``) the unit runs unguarded after
    a notice; without ``fcntl`` (Windows) it runs unguarded. Yields the lock file's path.
    """
    path = Path(out_dir) / "locks" / f"{unit_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    say = notice or (lambda line: None)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None and _lock(handle, path, unit_name, say):
            os.ftruncate(handle, 0)  # who holds it, for the notice of a run that waits
            os.pwrite(handle, f"pid {os.getpid()}".encode("ascii"), 0)
        yield path
    finally:
        os.close(handle)  # releases the lock


def _lock(handle: int, path: Path, unit_name: str, say: Callable[[str], None]) -> bool:
    """``flock`` the open lock file ``handle`` exclusively, saying so first when another process
    holds it (and waiting); False, after saying why, where the file system refuses locks."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 64, 0).decode("ascii", "replace").strip() or "another process"
        say(f"{unit_name}: waiting for another run into {path.parent.parent} ({holder}) to finish this unit "
            f"(lock {path})")
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as error:
        say(f"{unit_name}: cannot lock {path} ({error}); running the unit without a lock")
        return False
    return True


def existing_result(path: Path, expected_hash: str) -> dict | None:
    """The result at ``path`` when it exists, validates and was made by the same configuration."""
    if not path.is_file() or validate_file(path):
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    return result if result.get("run", {}).get("config_hash") == expected_hash else None


def check_suite(suite: Suite, data_root: Path | None) -> None:
    """Raise :class:`SuiteError` listing everything that would stop ``suite`` before it loads data:
    unknown benchmarks or methods, settings a split cannot serve, params the factory does not take,
    a missing data root or dataset folder."""
    problems = protocol_for(suite.kind).check(suite)
    for name in suite.benchmarks:
        try:
            benchmark = get_benchmark(name)
        except ValueError:
            continue  # already reported by the protocol
        if benchmark.data_folder is None:
            continue
        if data_root is None:
            problems.append(f"benchmark {name!r} needs --data-root (a folder holding {benchmark.data_folder}/) "
                            "or $PROTOBENCH_DATA")
        elif not (Path(data_root) / benchmark.data_folder).is_dir():
            problems.append(f"benchmark {name!r}: {Path(data_root) / benchmark.data_folder} does not exist "
                            f"(--data-root must hold {benchmark.data_folder}/)")
    if problems:
        raise SuiteError(f"suite {suite.name!r} cannot run:\n  " + "\n  ".join(problems))


def run_suite(suite: Suite, *, out_dir: Path, data_root: Path | None, device: str,
              progress: bool = True) -> list[dict]:
    """Check ``suite``, then run every unit; return all its results (new and reused)."""
    check_suite(suite, data_root)
    protocol = protocol_for(suite.kind)
    run = RunContext(Path(out_dir), device, torch.get_num_threads(), progress)
    results = []
    for benchmark_name in suite.benchmarks:
        data = None
        for unit in (u for u in suite.units() if u.benchmark == benchmark_name):
            outputs = protocol.outputs(unit, run.threads)
            done = _existing_results(run.out_dir, outputs)
            if all(result is not None for result in done):
                run.say(f"{unit.name}: all {len(outputs)} result files exist and validate; skipped")
                results += done
                continue
            with run.unit_lock(unit.name):
                # another run into the same folder may have finished some while this one waited
                done = _existing_results(run.out_dir, outputs)
                results += [result for result in done if result is not None]
                pending = [o for o, result in zip(outputs, done, strict=True) if result is None]
                if not pending:
                    run.say(f"{unit.name}: all {len(outputs)} result files exist and validate; skipped")
                    continue
                data = data or get_benchmark(benchmark_name).load(data_root)
                for output, result in protocol.run_unit(unit, pending, data, run):
                    if world()[0] == 0:
                        write_json_atomic(run.out_dir / output.file_name, result)
                    run.say(f"{unit.name}: {protocol.headline(result)}")
                    results.append(result)
    return results


def _existing_results(out_dir: Path, outputs: list) -> list[dict | None]:
    """The reusable result of each output (:func:`existing_result`) or None, as rank 0 sees them,
    on every rank under ``torchrun``: all ranks act on one view of a folder that another run may
    be changing."""
    mine = [existing_result(out_dir / o.file_name, o.config_hash) for o in outputs] if world()[0] == 0 else None
    if world()[1] == 1:
        return mine
    box = [mine]
    dist.broadcast_object_list(box, src=0)
    return box[0]
