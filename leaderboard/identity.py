"""Identity of a method configuration: the key of a leaderboard row.

A leaderboard row is a method *configuration*, never a bare registry name (DESIGN.md, Identity):
two configurations of one method (another learning rate, another training shot count) are two
rows, and files of one configuration (different seeds) pool into one row.

From schema 1.2.0 a result file records the configuration itself:

* ``method.params_hash`` = :func:`params_hash` of ``method.params``;
* ``method.configuration`` = the label the user gave the method in the suite, or, without one,
  :func:`hashed_configuration` = ``"<method.name>@<first 12 hex of the params hash>"``.

Writers import :func:`params_hash` and :func:`hashed_configuration` from here; readers key rows
with :func:`configuration_of`, which also reads 1.0 and 1.1 files (which lack the field).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

from protobench.leaderboard.schema import result_schema

HASH_PREFIX = "sha256:"
HASH_CHARS = 12  # hex digits of the params hash in a hashed configuration


def canonical_params(params: Mapping) -> bytes:
    """The bytes that :func:`params_hash` hashes: ``params`` as canonical JSON, UTF-8 encoded.

    Exactly ``json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``:
    keys sorted, no whitespace, non-ASCII characters written as themselves, numbers as Python's
    ``json`` writes them (so ``1`` and ``1.0`` differ). Raises ``TypeError`` for a value JSON
    cannot hold (a numpy scalar, a set, ...) and ``ValueError`` for NaN, an infinity, or a string
    that is not valid Unicode (a lone surrogate).
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a JSON object (a mapping), got {type(params).__name__}")
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def params_hash(params: Mapping) -> str:
    """``"sha256:<64 hex>"``: the SHA-256 of :func:`canonical_params` of ``params``.

    A pure function of the JSON value: key order does not matter, and a dict read back from a
    result file hashes as the dict that was written. Raises as :func:`canonical_params`.
    """
    return HASH_PREFIX + hashlib.sha256(canonical_params(params)).hexdigest()


def hashed_configuration(name: str, params: Mapping) -> str:
    """The configuration of an unlabelled method: ``"<name>@<first 12 hex of params_hash(params)>"``."""
    return f"{name}@{params_hash(params)[len(HASH_PREFIX):len(HASH_PREFIX) + HASH_CHARS]}"


def is_configuration(text: object) -> bool:
    """Whether ``text`` is a string the schema accepts as ``method.configuration``.

    The schema's own pattern (1 to 96 of ``A-Z a-z 0-9 _ . + @ -``, nothing else, no trailing
    newline), so a suite can reject a label before anything runs rather than at validation.
    """
    pattern = result_schema()["properties"]["method"]["properties"]["configuration"]["pattern"]
    return isinstance(text, str) and re.search(pattern, text) is not None


def configuration_of(result: Mapping) -> str:
    """The leaderboard row key of a parsed result file (any 1.x version, either kind).

    ``method.configuration`` when the file has it (schema >= 1.2.0 always does); for older files,
    ``method.params["label"]`` when that is a string, else ``method.name``. Needs ``method.name``
    (``KeyError`` without it); any file that passed the validator has it.
    """
    method = result["method"]
    configuration = method.get("configuration")
    if isinstance(configuration, str):
        return configuration
    params = method.get("params")
    label = params.get("label") if isinstance(params, Mapping) else None
    return label if isinstance(label, str) else method["name"]
