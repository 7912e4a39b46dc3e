"""Suites: declarative TOML files of benchmarks x methods x seeds, of one protocol ``kind``.

A suite file (``suites/<name>.toml`` inside this package, or any path) holds ``name``,
``description``, ``kind`` (``"fewshot"``, the default; each kind is a module of
:mod:`protobench.benchmarks.protocols` that owns its settings), ``benchmarks`` (registry names),
``seeds``, optional default ``tests``, and ``[[methods]]`` entries whose keys the kind defines.
Unknown keys anywhere are an error, so a typo is caught before any data is loaded.

A run unit is (benchmark, method entry, seed). Each role's random key is derived from the pair
(role, seed) with :func:`protobench.fewshot.counter_rng.role_key` (never ``seed + 1``): training
episodes, validation episodes, test episodes and the model's initial weights, so every method
run with the same seed is tested on identical episodes.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protobench.fewshot.counter_rng import MAX_SEED, role_key

SUITES_DIR = Path(__file__).with_name("suites")
SUITE_KEYS = ("name", "description", "kind", "benchmarks", "seeds", "tests", "methods")
ROLES = {"train": "train", "val": "val", "episodes": "test", "init": "init"}  # result field -> role


def check_keys(table: Any, allowed: tuple[str, ...], where: str) -> dict:
    """``table`` as a dict whose keys are all in ``allowed``; ValueError naming the others."""
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return table


@dataclass(frozen=True)
class Unit:
    """One (benchmark, method entry, seed) of a suite."""

    benchmark: str
    entry: Any  # the kind's method entry; it has ``label`` and ``method``
    seed: int

    @property
    def name(self) -> str:
        return f"{self.benchmark}__{self.entry.label}__seed{self.seed}"

    @property
    def keys(self) -> dict[str, int]:
        """The root seed and each role's key, as a result file records them (``seeds``)."""
        return {"seed": self.seed, **{field: role_key(role, self.seed) for field, role in ROLES.items()}}


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    kind: str
    benchmarks: tuple[str, ...]
    seeds: tuple[int, ...]
    methods: tuple[Any, ...]
    default_tests: tuple[Any, ...] = ()

    def units(self) -> list[Unit]:
        return [Unit(b, entry, seed) for b in self.benchmarks for entry in self.methods for seed in self.seeds]

    def select(self, methods: list[str] | None = None, seeds: list[int] | None = None) -> Suite:
        """This suite restricted to method labels or names in ``methods``; a registered method
        the suite does not list is added untrained with the suite's default tests."""
        from protobench.benchmarks.protocols import protocol_for

        entries = list(self.methods)
        if methods:
            entries = [e for e in self.methods if e.label in methods or e.method in methods]
            covered = {e.label for e in entries} | {e.method for e in entries}
            protocol = protocol_for(self.kind)
            entries += [protocol.untrained_entry(name, self) for name in methods if name not in covered]
        return Suite(self.name, self.description, self.kind, self.benchmarks,
                     _seeds(seeds, "--seeds") if seeds else self.seeds, tuple(entries), self.default_tests)


def _seeds(values: Any, where: str) -> tuple[int, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"{where}: expected a non-empty list of seeds")
    for seed in values:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"{where}: seed {seed!r} is not an integer in [0, 2**64)")
    return tuple(values)


def suite_names() -> list[str]:
    """The suites that ship with the package."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite by name (one of :func:`suite_names`) or from a ``.toml`` path; ValueError says why not."""
    from protobench.benchmarks.protocols import protocol_for

    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            close = difflib.get_close_matches(str(name_or_path), suite_names(), n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise ValueError(f"unknown suite {name_or_path!r}{hint}; known: {', '.join(suite_names())} "
                             "(or give a .toml path)")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: cannot read suite: {error}") from error
    where = str(path)
    check_keys(table, SUITE_KEYS, where)
    for key in ("name", "benchmarks", "methods"):
        if key not in table:
            raise ValueError(f"{where}: missing {key}")
    if not isinstance(table["benchmarks"], list) or not all(isinstance(b, str) for b in table["benchmarks"]):
        raise ValueError(f"{where}: benchmarks must be a list of benchmark names")
    if not isinstance(table["methods"], list) or not table["methods"]:
        raise ValueError(f"{where}: methods must be a non-empty array of [[methods]] tables")
    protocol = protocol_for(table.get("kind", "fewshot"), where)
    default_tests = protocol.parse_tests(table.get("tests", []), f"{where}: tests")
    entries = tuple(protocol.parse_entry(t, default_tests, f"{where}: methods[{i}]")
                    for i, t in enumerate(table["methods"]))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: method labels must be unique, got {labels}")
    return Suite(str(table["name"]), str(table.get("description", "")), protocol.kind,
                 tuple(table["benchmarks"]), _seeds(table.get("seeds", [0]), f"{where}: seeds"), entries,
                 default_tests)
