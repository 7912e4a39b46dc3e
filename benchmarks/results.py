"""What every kind of result file shares: header, method record, environment, atomic writing.

The schema is ``leaderboard/result.schema.json``; each protocol kind builds its own body
(:mod:`protobench.benchmarks.protocols`).
"""

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

import protobench
from protobench.fewshot.atomic import write_atomic
from protobench.fewshot.learner import Described
from protobench.leaderboard.identity import hashed_configuration, params_hash
from protobench.leaderboard.schema import SCHEMA_VERSION


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


def array_checksum(array: np.ndarray) -> str:
    """SHA-256 over an array's bytes in C order (``sha256:<hex>``): the checksum of data built in memory."""
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def run_header(kind: str, unit_name: str, config_hash: str) -> dict:
    """The fields every result file starts with: schema version, kind and the run."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run": {"id": uuid.uuid4().hex, "time": now.isoformat(), "harness_version": protobench.__version__,
                "git_commit": git_commit(), "unit": unit_name, "config_hash": config_hash},
    }


def config_hash(config: dict) -> str:
    """``sha256:<hex>`` of a configuration's canonical JSON (sorted keys, no spaces)."""
    payload = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def method_record(name: str, label: str, params: dict, learner: Described) -> dict:
    """The result's ``method``: registry name, version, backbone, pretraining, params and the
    configuration that is its leaderboard row (the label when it differs from the name, else
    ``name@<params hash>``)."""
    return {"name": name, "version": str(learner.version), "backbone": learner.backbone_name,
            "pretraining": learner.pretraining, "params": params, "params_hash": params_hash(params),
            "configuration": label if label != name else hashed_configuration(name, params)}


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` with :func:`protobench.fewshot.atomic.write_atomic`;
    ValueError (nothing written) when it holds a NaN or an infinity, which JSON cannot represent."""
    text = json.dumps(payload, indent=1, allow_nan=False)
    write_atomic(path, lambda stream: stream.write((text + "\n").encode("utf-8")))
