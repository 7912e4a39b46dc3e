"""Re-derive a few-shot result's test episodes from what it records, and check its claims.

A result file records its benchmark, split, episode spec, episode count and the key its test
episodes were drawn with (``seeds.episodes``). With the dataset at hand, the episodes are drawn
again with :class:`~protobench.fewshot.sampler.EpisodeSampler`; their digest, the number of
classes they were drawn from and the dataset's checksum must match the file. A file whose digest
was copied from another result fails here even though its own figures add up, so ``compare``
never pairs results that were not evaluated on identical episodes.

Used by ``protobench validate --data-root DIR`` and ``protobench submit --data-root DIR``.
"""

from __future__ import annotations

from pathlib import Path

from protobench.benchmarks.catalog import BenchmarkData
from protobench.benchmarks.registry import get_benchmark
from protobench.fewshot.episodes import spec_from_dict
from protobench.fewshot.sampler import EpisodeSampler


class EpisodeRederiver:
    """Checks validated few-shot results against their datasets, loading each benchmark once."""

    def __init__(self, data_root: Path | None) -> None:
        self.data_root = data_root
        self._loaded: dict[str, BenchmarkData] = {}

    def _data(self, name: str) -> BenchmarkData:
        if name not in self._loaded:
            self._loaded[name] = get_benchmark(name).load(self.data_root)
        return self._loaded[name]

    def problems(self, result: dict) -> list[str]:
        """What disagrees between a schema-valid result and its re-derived episodes ([] if all agrees)."""
        if result.get("kind") != "fewshot":
            return []  # continual streams are re-derived once streams exist
        benchmark, episodes = result["benchmark"], result["episodes"]
        try:
            data = self._data(benchmark["name"])
        except (ValueError, OSError) as error:
            return [f"$.benchmark.name: cannot re-derive the episodes: {error}"]
        problems = []
        if benchmark.get("dataset_checksum") != data.checksum:
            problems.append(f"$.benchmark.dataset_checksum: {benchmark.get('dataset_checksum')} does not match "
                            f"{data.checksum} computed from the data under {self.data_root}")
        source = data.sources.get(benchmark["split"])
        if source is None:
            return problems + [f"$.benchmark.split: benchmark {data.name!r} has no {benchmark['split']!r} split"]
        try:
            spec = spec_from_dict(benchmark["episode_spec"])
            sampler = EpisodeSampler(source, spec, seed=result["seeds"]["episodes"], n_episodes=episodes["n"])
        except (ValueError, TypeError) as error:
            return problems + [f"$.benchmark.episode_spec: cannot draw these episodes from the data: {error}"]
        if "n_classes" in episodes and episodes["n_classes"] != len(sampler.classes):
            problems.append(f"$.episodes.n_classes: {episodes['n_classes']} claimed, the {benchmark['split']} split "
                            f"has {len(sampler.classes)} usable classes")
        digest = sampler.digest()
        if digest != episodes["digest"]:
            problems.append(f"$.episodes.digest: {episodes['digest']} does not match {digest}, the digest of the "
                            f"episodes re-derived from $.seeds.episodes and the spec")
        return problems
