"""Build and write result files (schema in ``leaderboard/schema/result.schema.json``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import torch

import fewshot
from fewshot.metrics import CI95_DEFINITION, MEAN_DEFINITION, mean_ci95
from leaderboard.schema import SCHEMA_VERSION


def git_commit() -> str | None:
    """The commit of the working tree this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict:
    """Versions and hardware that a result depends on."""
    cuda = torch.cuda.is_available() and device.startswith("cuda")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine()),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "mixed_precision": "bfloat16 autocast" if cuda else None,
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def directory_checksum(paths: list[Path]) -> str:
    """SHA-256 over the given files' bytes in the given order (``sha256:<hex>``)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def build_fewshot_result(*, unit, data, learner, sampler, accuracies, training: dict, eval_seconds: float,
                         device: str, world_size: int = 1) -> dict:
    """A schema-conformant few-shot result for one test setting of a run unit."""
    mean, ci95 = mean_ci95(accuracies)
    spec = sampler.spec
    entry = unit.entry
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "fewshot",
        "run": {"id": uuid.uuid4().hex, "time": now.isoformat(), "harness_version": fewshot.__version__,
                "git_commit": git_commit(), "unit": unit.name},
        "method": {
            "name": entry.method,
            "version": str(getattr(learner, "version", "1")),
            "backbone": getattr(learner, "backbone_name", None),
            "pretraining": getattr(learner, "pretraining", None),
            "params": {"label": entry.label, **entry.params,
                       "train": entry.train.describe() if entry.train else None,
                       "val": entry.val.describe() if entry.val else None},
        },
        "benchmark": {"name": data.name, "dataset": data.dataset, "dataset_checksum": data.checksum,
                      "split": "test", "protocol": f"{spec.n_way}-way {spec.n_shot}-shot {spec.n_query}-query",
                      "episode_spec": spec.to_dict()},
        "seeds": dict(unit.seeds),
        "episodes": {"n": len(sampler), "digest": sampler.digest(), "n_classes": int(len(sampler.classes))},
        "evidence": {"per_episode_accuracy": [float(a) for a in accuracies]},
        "metrics": {
            "mean_accuracy": {"value": mean, "definition": MEAN_DEFINITION},
            "ci95": {"value": ci95, "definition": CI95_DEFINITION},
        },
        "budget": {
            "train_episodes": training["episodes"],
            "train_wall_seconds": training["wall_seconds"],
            "eval_wall_seconds": round(eval_seconds, 2),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None,
            "processes": world_size,
        },
        "training": {k: v for k, v in training.items() if k != "episodes"},
        "environment": environment(device),
    }


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=1) + "\n")
    partial.replace(path)
