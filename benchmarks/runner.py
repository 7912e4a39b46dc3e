"""The evaluation runner: what every protocol kind shares.

For each unit (benchmark, method entry, seed) of a suite, the runner

1. asks the suite's protocol (:mod:`protobench.benchmarks.protocols`) which result files the
   unit writes, and skips the unit when each exists, validates and carries the same
   configuration hash (resume; a file from another configuration is recomputed);
2. loads the benchmark's data once for all its units;
3. lets the protocol train (or reuse) and evaluate the unit, handing it a :class:`RunContext`
   (device, mixed precision, progress, checkpoints) and receiving its results;
4. writes each result file atomically, from rank 0 only under ``torchrun``.

The suite is checked completely (:func:`check_suite`) before any data is loaded.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from protobench.benchmarks.distributed import world
from protobench.benchmarks.protocols import protocol_for
from protobench.benchmarks.registry import get_benchmark
from protobench.benchmarks.results import write_json_atomic
from protobench.benchmarks.suite import Suite
from protobench.leaderboard.validate import validate_file


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
        """Write the trained state and its training record atomically."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        writing = self.final.with_name(self.final.name + ".writing")
        torch.save({"model": state, "training": record}, writing)
        writing.replace(self.final)

    def load_final(self, device: str) -> tuple[dict, dict]:
        saved = torch.load(self.final, map_location=device, weights_only=True)
        return saved["model"], saved["training"]


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

    def checkpoints(self, unit_name: str, training_hash: str) -> Checkpoints:
        stem = f"{unit_name}__{training_hash.removeprefix('sha256:')[:12]}"
        folder = self.out_dir / "checkpoints"
        return Checkpoints(folder / f"{stem}.final.pt", folder / f"{stem}.partial.pt")

    def say(self, message: str) -> None:
        if self.progress and world()[0] == 0:
            print(message, flush=True)


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
            done = [(o, existing_result(run.out_dir / o.file_name, o.config_hash)) for o in outputs]
            results += [result for _, result in done if result is not None]
            pending = [o for o, result in done if result is None]
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
