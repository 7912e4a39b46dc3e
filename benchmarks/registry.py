"""Registries of methods and benchmarks.

Add a method with the decorator, or from another installed package through the entry-point
group ``protobench.methods`` (``name = "package.module:factory"``); it is then found by name
without editing this repository::

    @register_method("my-method")
    def my_method(input_shape: tuple[int, ...], device: str, **params) -> Learner: ...

A method factory returns a learner: optional ``fit(train_source, spec, *, n_episodes, seed,
validate, validate_every, checkpoint, progress, **options)``, and either ``embed(x)`` with
``logits_from_embeddings(support, support_labels, n_way, query)`` (scored from cached
embeddings) or ``predict(support_x, support_y, query_x) -> logits``. A learner that trains
also has ``state_dict()`` / ``load_state_dict(state)``.

A benchmark loader takes the data root (or None) and returns a
:class:`benchmarks.datasets.BenchmarkData`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

METHOD_ENTRY_POINTS = "protobench.methods"
_BUILTIN_MODULES = ("benchmarks.methods", "benchmarks.datasets")

_methods: dict[str, Callable] = {}
_benchmarks: dict[str, Callable] = {}
_loaded = False


def _register(table: dict, kind: str, name: str) -> Callable[[Callable], Callable]:
    def decorator(factory: Callable) -> Callable:
        if name in table and table[name] is not factory:
            raise ValueError(f"{kind} {name!r} is already registered by {table[name].__module__}")
        table[name] = factory
        return factory

    return decorator


def register_method(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a method factory under ``name``."""
    return _register(_methods, "method", name)


def register_benchmark(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a benchmark loader under ``name``."""
    return _register(_benchmarks, "benchmark", name)


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for entry in entry_points(group=METHOD_ENTRY_POINTS):
        if entry.name not in _methods:
            _methods[entry.name] = entry.load()


def methods() -> dict[str, Callable]:
    """Every known method factory by name: built-in, decorated, and from entry points."""
    _load_all()
    return dict(sorted(_methods.items()))


def benchmarks() -> dict[str, Callable]:
    """Every known benchmark loader by name."""
    _load_all()
    return dict(sorted(_benchmarks.items()))


def get_method(name: str) -> Callable:
    """The factory of method ``name``; ValueError naming the known ones otherwise."""
    known = methods()
    if name not in known:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(known)} (see `protobench ls`)")
    return known[name]


def get_benchmark(name: str) -> Callable:
    """The loader of benchmark ``name``; ValueError naming the known ones otherwise."""
    known = benchmarks()
    if name not in known:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(known)} (see `protobench ls`)")
    return known[name]


def describe(factory: Callable) -> str:
    """First line of a factory's docstring."""
    return (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
