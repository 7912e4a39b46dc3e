"""Shared fixtures: the real-data root and small trained-free learners."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = "PROTOBENCH_DATA"


def real_data_root(dataset: str) -> Path:
    """``$PROTOBENCH_DATA/<dataset>``; skips when absent, but fails under CI=true."""
    root = os.environ.get(DATA_ENV)
    path = Path(root) / dataset if root else None
    if path is not None and path.is_dir():
        return Path(root)
    reason = f"real data not found: set {DATA_ENV} to a folder holding {dataset}/ (../shared/data here)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def omniglot_root() -> Path:
    return real_data_root("omniglot")
