"""The result-file JSON Schema and its version."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

SCHEMA_VERSION = "1.2.0"
SCHEMA_PATH = Path(__file__).with_name("result.schema.json")


@cache
def result_schema() -> dict:
    """The JSON Schema (draft 2020-12) every result file must satisfy."""
    return json.loads(SCHEMA_PATH.read_text())
