"""Suites: declarative TOML files of benchmarks x methods x seeds x test settings.

A suite file (``benchmarks/suites/<name>.toml``) holds ``name``, ``description``, ``benchmarks``
(registry names), ``seeds``, optional default ``tests``, and ``[[methods]]`` entries with
``label`` (unique in the suite), ``method`` (registry name), optional ``params`` (passed to the
method factory), ``train`` (episode spec, ``episodes`` and extra ``fit`` options such as
``lr_step``), ``val`` (spec, ``episodes``, ``every``) and ``tests``. Each test setting is an
episode spec and a number of ``episodes``.

A run unit is (benchmark, method entry, seed). Seed ``s`` draws training episodes with seed s,
validation episodes with s + 1 and test episodes with s + 2, so every method run with the same
seed is tested on identical episodes.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fewshot.episodes import EpisodeSpec

SUITES_DIR = Path(__file__).with_name("suites")
_SPEC_KEYS = ("n_way", "n_shot", "n_query")


@dataclass(frozen=True)
class EpisodeSetting:
    """``episodes`` episodes of ``spec``; ``options`` holds any other keys of the TOML table."""

    spec: EpisodeSpec
    episodes: int
    options: dict = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: dict, where: str) -> EpisodeSetting:
        missing = [key for key in (*_SPEC_KEYS, "episodes") if key not in table]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        try:
            spec = EpisodeSpec(*(table[key] for key in _SPEC_KEYS))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        options = {k: v for k, v in table.items() if k not in (*_SPEC_KEYS, "episodes")}
        return cls(spec, int(table["episodes"]), options)

    def describe(self) -> dict:
        return {**self.spec.to_dict(), "episodes": self.episodes, **self.options}


@dataclass(frozen=True)
class MethodEntry:
    """One method of a suite, with its training, validation and test settings."""

    label: str
    method: str
    params: dict
    train: EpisodeSetting | None
    val: EpisodeSetting | None
    tests: tuple[EpisodeSetting, ...]


@dataclass(frozen=True)
class Unit:
    """One (benchmark, method entry, seed): trains once, writes one result file per test."""

    benchmark: str
    entry: MethodEntry
    seed: int

    @property
    def name(self) -> str:
        return f"{self.benchmark}__{self.entry.label}__seed{self.seed}"

    def result_name(self, test: EpisodeSetting) -> str:
        spec = test.spec
        return f"{self.benchmark}__{self.entry.label}__{spec.n_way}w{spec.n_shot}s{spec.n_query}q__seed{self.seed}.json"

    @property
    def seeds(self) -> dict[str, int]:
        return {"train": self.seed, "val": self.seed + 1, "episodes": self.seed + 2}


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    benchmarks: tuple[str, ...]
    seeds: tuple[int, ...]
    methods: tuple[MethodEntry, ...]
    default_tests: tuple[EpisodeSetting, ...] = ()

    def units(self) -> list[Unit]:
        return [Unit(b, entry, seed) for b in self.benchmarks for entry in self.methods for seed in self.seeds]

    def select(self, methods: list[str] | None = None, seeds: list[int] | None = None) -> Suite:
        """This suite restricted to method labels or names in ``methods``; a registered method
        the suite does not list is added untrained with the suite's default tests."""
        entries = list(self.methods)
        if methods:
            entries = [e for e in self.methods if e.label in methods or e.method in methods]
            covered = {e.label for e in entries} | {e.method for e in entries}
            tests = self.default_tests or self.methods[0].tests
            entries += [MethodEntry(name, name, {}, None, None, tests) for name in methods if name not in covered]
        return Suite(self.name, self.description, self.benchmarks, tuple(seeds or self.seeds), tuple(entries),
                     self.default_tests)


def _entry(table: dict, number: int, default_tests: tuple[EpisodeSetting, ...], where: str) -> MethodEntry:
    where = f"{where}: methods[{number}]"
    if "method" not in table:
        raise ValueError(f"{where}: missing method (a registered method name)")
    tests = tuple(EpisodeSetting.from_table(t, f"{where}.tests[{i}]") for i, t in enumerate(table.get("tests", [])))
    if not tests and not default_tests:
        raise ValueError(f"{where}: no tests, and the suite has no default tests")
    return MethodEntry(
        label=table.get("label", table["method"]),
        method=table["method"],
        params=dict(table.get("params", {})),
        train=EpisodeSetting.from_table(table["train"], f"{where}.train") if "train" in table else None,
        val=EpisodeSetting.from_table(table["val"], f"{where}.val") if "val" in table else None,
        tests=tests or default_tests,
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite by name (``benchmarks/suites/<name>.toml``) or from a TOML file path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.toml")))
            raise ValueError(f"unknown suite {name_or_path!r}; known: {known} (or give a .toml path)")
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{path}: cannot read suite: {error}") from error
    where = str(path)
    for key in ("name", "benchmarks", "methods"):
        if key not in table:
            raise ValueError(f"{where}: missing {key}")
    default_tests = tuple(EpisodeSetting.from_table(t, f"{where}: tests[{i}]")
                          for i, t in enumerate(table.get("tests", [])))
    entries = tuple(_entry(t, i, default_tests, where) for i, t in enumerate(table["methods"]))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: method labels must be unique, got {labels}")
    return Suite(table["name"], table.get("description", ""), tuple(table["benchmarks"]),
                 tuple(int(s) for s in table.get("seeds", [0])), entries, default_tests)


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
