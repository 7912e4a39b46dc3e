"""Few-shot evaluation: accuracy per episode, batched from cached embeddings or one by one.

Accuracies are fractions in [0, 1]; :func:`protobench.fewshot.metrics.mean_ci95` summarises them.
An :class:`~protobench.fewshot.learner.EmbeddingLearner` is scored from cached embeddings
(:func:`embed_source` once, then :func:`evaluate_cached`); a
:class:`~protobench.fewshot.learner.PredictingLearner` episode by episode
(:func:`evaluate_per_episode`). :func:`evaluate` picks the right one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from protobench.fewshot.episodes import Episode, EpisodeSpec
from protobench.fewshot.learner import EmbeddingLearner, EpisodeTask, PredictingLearner, TaskBatch
from protobench.fewshot.sampler import EpisodeSampler


def stack_images(source, indices) -> torch.Tensor:
    """Images of ``source`` at ``indices`` as one tensor (uses ``source.images`` when present)."""
    images = getattr(source, "images", None)
    if isinstance(images, torch.Tensor):
        return images[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
    return torch.stack([torch.as_tensor(source[int(i)][0]) for i in indices])


def class_names_of(source) -> list[str] | None:
    """The source's ``class_names`` (name of label c at position c), or None when it has none."""
    names = getattr(source, "class_names", None)
    return list(names) if names is not None else None


@torch.no_grad()
def embed_source(learner: EmbeddingLearner, source, batch_size: int = 1024, progress=None) -> torch.Tensor:
    """``learner.embed`` of every example of ``source``, in index order: (n, d) float32 on the CPU."""
    chunks = []
    for start in range(0, len(source), batch_size):
        indices = np.arange(start, min(start + batch_size, len(source)))
        chunks.append(learner.embed(stack_images(source, indices)).float().cpu())
        if progress is not None:
            progress.update(len(indices))
    return torch.cat(chunks)


def _gather(embeddings: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
    """Rows of ``embeddings`` at ``indices`` (B, k) -> (B, k, d); index_select is the fast gather."""
    flat = embeddings.index_select(0, torch.from_numpy(indices.reshape(-1)))
    return flat.view(*indices.shape, embeddings.shape[1])


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(-1).cpu() == labels).double().mean(-1)


@torch.no_grad()
def evaluate_cached(learner: EmbeddingLearner, embeddings: torch.Tensor, sampler: EpisodeSampler, chunk: int = 64,
                    episodes: range | None = None, class_names: list[str] | None = None) -> np.ndarray:
    """Per-episode accuracy of the sampler's episodes (all, or the ``episodes`` range), scored
    from cached embeddings with ``learner.score``.

    Fixed specs are scored ``chunk`` episodes at a time with one batched call; variable specs one
    episode at a time. ``class_names`` (the source's, by label) reach the learner through the
    :class:`TaskBatch`. Each episode's accuracy does not depend on which others share its chunk.
    """
    episodes = range(len(sampler)) if episodes is None else episodes
    accuracies = np.empty(len(episodes), dtype=np.float64)
    if isinstance(sampler.spec, EpisodeSpec):
        for start in range(episodes.start, episodes.stop, chunk):
            batch = sampler.batch(start, min(start + chunk, episodes.stop))
            logits = learner.score(_gather(embeddings, batch.support), torch.from_numpy(batch.support_labels),
                                   _gather(embeddings, batch.query), TaskBatch.of(batch.classes, class_names))
            position = start - episodes.start
            accuracies[position : position + len(batch)] = _accuracy(
                logits, torch.from_numpy(batch.query_labels)).numpy()
        return accuracies
    for number, episode in enumerate(sampler.episodes(episodes.start, episodes.stop)):
        logits = learner.score(embeddings[torch.from_numpy(episode.support)][None],
                               torch.from_numpy(episode.support_labels),
                               embeddings[torch.from_numpy(episode.query)][None],
                               TaskBatch.of(episode.classes[None], class_names))
        accuracies[number] = float(_accuracy(logits, torch.from_numpy(episode.query_labels)[None])[0])
    return accuracies


def episode_task(source, episode: Episode, class_names: list[str] | None = None) -> EpisodeTask:
    """The :class:`EpisodeTask` of ``episode``: its images from ``source`` and its classes' names."""
    names = None if class_names is None else tuple(class_names[c] for c in episode.classes.tolist())
    return EpisodeTask(stack_images(source, episode.support), torch.from_numpy(episode.support_labels),
                       stack_images(source, episode.query), episode.classes, names)


@torch.no_grad()
def evaluate_per_episode(learner: PredictingLearner, source, episodes: Iterable[Episode],
                         progress=None) -> np.ndarray:
    """Per-episode accuracy from ``learner.predict`` on each episode's own images (the reference loop);
    ``progress`` (a :func:`~protobench.fewshot.progress.progress_bar`) is advanced once per episode."""
    names = class_names_of(source)
    accuracies = []
    for episode in episodes:
        accuracies.append(float(_accuracy(learner.predict(episode_task(source, episode, names)),
                                          torch.from_numpy(episode.query_labels))))
        if progress is not None:
            progress.update(1)
    return np.asarray(accuracies, dtype=np.float64)


def evaluate(learner: EmbeddingLearner | PredictingLearner, source, sampler: EpisodeSampler) -> np.ndarray:
    """Per-episode accuracy of every episode of ``sampler``: cached and batched for an embedding
    learner, episode by episode for a predicting one."""
    if isinstance(learner, EmbeddingLearner):
        return evaluate_cached(learner, embed_source(learner, source), sampler, class_names=class_names_of(source))
    return evaluate_per_episode(learner, source, sampler.episodes())
