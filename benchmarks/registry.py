"""Registries of methods and benchmarks, with a decorator each (lm-evaluation-harness style).

Add a method with the decorator, or from another installed package through the entry-point
group ``protobench.methods`` (``name = "package.module:factory"``; a few-shot method unless
its module registers the name with the decorator and another ``kind``); it is then found by
name without editing this repository::

    @register_method("my-method")
    def my_method(input_shape: tuple[int, ...], device: str, **params) -> MyLearner: ...

A method factory returns a learner that satisfies the protocol of its kind
(:mod:`protobench.fewshot.learner` for ``kind="fewshot"``). When the factory is a class, or
annotates its return type with a class, that class is checked when it is registered; every
product is checked again when it is first built (:func:`build_method`), and a learner that
lacks a member of its protocol is refused with an error naming it.

A benchmark is registered with its kind, input shape and the size of each split (classes and
the smallest class), so that a suite can be checked before any data is loaded; its loader
takes the data root (or None) and returns :class:`protobench.benchmarks.catalog.BenchmarkData`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from protobench.fewshot.learner import missing_members

METHOD_ENTRY_POINTS = "protobench.methods"
_BUILTIN_MODULES = ("protobench.benchmarks.methods", "protobench.benchmarks.catalog",
                    "protobench.benchmarks.continual_catalog")


@dataclass(frozen=True)
class SplitSize:
    """A split's number of classes and the number of examples in its smallest class."""

    n_classes: int
    min_class_size: int


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: what it is, checked without loading data, and its loader."""

    name: str
    kind: str
    description: str
    input_shape: tuple[int, ...]
    splits: dict[str, SplitSize]  # the splits it has ("train", "val", "test")
    data_folder: str | None  # the folder it needs under the data root; None when embedded
    loader: Callable = field(repr=False)

    def load(self, data_root: Path | None):
        """The benchmark's data; ValueError when it needs a data root that is not given."""
        if self.data_folder is not None and data_root is None:
            raise ValueError(f"benchmark {self.name!r} needs --data-root (a folder holding {self.data_folder}/) "
                             "or $PROTOBENCH_DATA")
        return self.loader(data_root)


@dataclass(frozen=True)
class Method:
    """A registered method factory and the kind of learner it builds."""

    name: str
    kind: str
    factory: Callable = field(repr=False)

    @property
    def description(self) -> str:
        """The first paragraph of the factory's docstring, without reST roles (``:class:`X``` -> ``X``)."""
        paragraph = " ".join((self.factory.__doc__ or "").strip().split("\n\n")[0].split())
        return re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", paragraph).replace("``", "")

    @property
    def module(self) -> str:
        return getattr(self.factory, "__module__", "?")


_methods: dict[str, Method] = {}
_benchmarks: dict[str, Benchmark] = {}
_loaded = False


class ContractError(TypeError):
    """A method's learner does not satisfy the protocol of its kind."""


class MethodParamsError(ValueError):
    """A method's factory refused the values of its params (its ValueError, named after the method)."""


def _product_class(factory: Callable) -> type | None:
    """The class a factory builds, when it says so (a class, or a return annotation naming one)."""
    if inspect.isclass(factory):
        return factory
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # unresolvable annotations: checked when first built instead
        return None
    product = hints.get("return")
    return product if inspect.isclass(product) else None


def _check(name: str, kind: str, learner) -> None:
    missing = missing_members(learner, kind)
    if missing:
        raise ContractError(f"method {name!r}: its learner does not satisfy the {kind} learner protocol: "
                            f"{missing} (see protobench.fewshot.learner)")


def keyword_parameters(factory: Callable) -> set[str] | None:
    """The parameter names ``factory`` accepts, or None when it accepts any keyword.

    A class's ``**params`` that its ``__init__`` passes on to a base class is followed up the
    method resolution order (``EWC(..., ewc_lambda, **params)`` takes ``ewc_lambda`` and every
    parameter of its base classes' ``__init__``), so a misspelt parameter is found before a run.
    """
    functions = [klass.__init__ for klass in factory.__mro__ if "__init__" in vars(klass)] \
        if inspect.isclass(factory) else [factory]
    names: set[str] = set()
    for function in functions:
        parameters = inspect.signature(function).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names
    return None


def register_method(name: str, kind: str = "fewshot") -> Callable[[Callable], Callable]:
    """Decorator: register a method factory under ``name``; checks the class it builds when known."""

    def decorator(factory: Callable) -> Callable:
        if name in _methods and _methods[name].factory is not factory:
            raise ValueError(f"method {name!r} is already registered by {_methods[name].module}")
        product = _product_class(factory)
        if product is not None:
            _check(name, kind, product)
        _methods[name] = Method(name, kind, factory)
        return factory

    return decorator


def register_benchmark(name: str, *, input_shape: tuple[int, ...], splits: dict[str, SplitSize],
                       data_folder: str | None = None, kind: str = "fewshot") -> Callable[[Callable], Callable]:
    """Decorator: register a benchmark loader under ``name`` with what a suite check needs."""

    def decorator(loader: Callable) -> Callable:
        if name in _benchmarks and _benchmarks[name].loader is not loader:
            raise ValueError(f"benchmark {name!r} is already registered by {_benchmarks[name].loader.__module__}")
        description = (loader.__doc__ or "").strip().splitlines()[0] if loader.__doc__ else ""
        _benchmarks[name] = Benchmark(name, kind, description, tuple(input_shape), dict(splits), data_folder, loader)
        return loader

    return decorator


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for entry in entry_points(group=METHOD_ENTRY_POINTS):
        if entry.name not in _methods:
            factory = entry.load()  # a module that registers with the decorator (any kind) is now registered
            if entry.name not in _methods:
                _methods[entry.name] = Method(entry.name, "fewshot", factory)


def methods() -> dict[str, Method]:
    """Every known method by name: built-in, decorated, and from entry points."""
    _load_all()
    return dict(sorted(_methods.items()))


def benchmarks() -> dict[str, Benchmark]:
    """Every known benchmark by name."""
    _load_all()
    return dict(sorted(_benchmarks.items()))


def _unknown(what: str, name: str, known: dict) -> ValueError:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint}; known: {', '.join(known)} (see `protobench ls`)")


def get_method(name: str) -> Method:
    """The method ``name``; ValueError with a "did you mean" suggestion otherwise."""
    known = methods()
    if name not in known:
        raise _unknown("method", name, known)
    return known[name]


def get_benchmark(name: str) -> Benchmark:
    """The benchmark ``name``; ValueError with a "did you mean" suggestion otherwise."""
    known = benchmarks()
    if name not in known:
        raise _unknown("benchmark", name, known)
    return known[name]


def build_method(name: str, input_shape: tuple[int, ...], device: str, **params):
    """Build method ``name``'s learner and check it against its protocol (ContractError if not); a
    ValueError of the factory (a param value it refuses) comes back as :class:`MethodParamsError`."""
    method = get_method(name)
    try:
        learner = method.factory(input_shape, device, **params)
    except ValueError as error:
        raise MethodParamsError(f"method {name!r}: {error}") from error
    _check(name, method.kind, learner)
    return learner
