"""protobench: a benchmark harness for few-shot and continual learning.

The installed package holds the repository's folders under one namespace:
``protobench.fewshot`` (episodes, samplers, few-shot learners), ``protobench.continual``
(streams, continual learners and metrics), ``protobench.benchmarks`` (suites, registries, the
runner, the CLI) and ``protobench.leaderboard`` (result schema, validator, ranking, page).

The sampler API is re-exported here for papers' code; importing it does not import torch::

    from protobench import EpisodeSampler, EpisodeSpec
"""

from protobench.fewshot import (
    Episode,
    EpisodeBatch,
    EpisodeSampler,
    EpisodeSpec,
    VariableEpisodeSpec,
    episode_digest,
    load_episodes,
    save_episodes,
)

__version__ = "0.2.0"

__all__ = [
    "Episode",
    "EpisodeBatch",
    "EpisodeSampler",
    "EpisodeSpec",
    "VariableEpisodeSpec",
    "__version__",
    "episode_digest",
    "load_episodes",
    "save_episodes",
]
