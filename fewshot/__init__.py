"""Few-shot episodes and samplers; importing this package does not import torch.

>>> from fewshot import EpisodeSampler, EpisodeSpec
>>> sampler = EpisodeSampler(labels, EpisodeSpec(n_way=5, n_shot=1, n_query=15), seed=0, n_episodes=600)
"""

from protobench.fewshot.episodes import (
    Episode,
    EpisodeBatch,
    EpisodeSpec,
    VariableEpisodeSpec,
    episode_digest,
    load_episodes,
    save_episodes,
    spec_from_dict,
)
from protobench.fewshot.sampler import EpisodeSampler, check_labels, labels_of
from protobench.fewshot.splits import ClassSplit, read_class_list, split_classes

__all__ = [
    "ClassSplit",
    "Episode",
    "EpisodeBatch",
    "EpisodeSampler",
    "EpisodeSpec",
    "VariableEpisodeSpec",
    "check_labels",
    "episode_digest",
    "labels_of",
    "load_episodes",
    "read_class_list",
    "save_episodes",
    "spec_from_dict",
    "split_classes",
]
