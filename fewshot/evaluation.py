"""Few-shot evaluation: accuracy per episode, batched from cached embeddings or one by one.

Accuracies are fractions in [0, 1]; :func:`fewshot.metrics.mean_ci95` summarises them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from fewshot.episodes import Episode, EpisodeSpec
from fewshot.sampler import EpisodeSampler


def stack_images(source, indices) -> torch.Tensor:
    """Images of ``source`` at ``indices`` as one tensor (uses ``source.images`` when present)."""
    images = getattr(source, "images", None)
    if isinstance(images, torch.Tensor):
        return images[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
    return torch.stack([torch.as_tensor(source[int(i)][0]) for i in indices])


@torch.no_grad()
def embed_source(learner, source, batch_size: int = 1024, progress=None) -> torch.Tensor:
    """``learner.embed`` of every example of ``source``, in index order: (n, d) on the CPU."""
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
    return (logits.argmax(-1) == labels).double().mean(-1)


@torch.no_grad()
def evaluate_cached(learner, embeddings: torch.Tensor, sampler: EpisodeSampler, chunk: int = 64,
                    episodes: range | None = None) -> np.ndarray:
    """Per-episode accuracy of the sampler's episodes (all, or the ``episodes`` range), scored
    from cached embeddings.

    Fixed specs are scored ``chunk`` episodes at a time with one batched call of
    ``learner.logits_from_embeddings``; variable specs one episode at a time with the same call.
    Each episode's accuracy does not depend on which others share its chunk.
    """
    episodes = range(len(sampler)) if episodes is None else episodes
    accuracies = np.empty(len(episodes), dtype=np.float64)
    if isinstance(sampler.spec, EpisodeSpec):
        n_way = sampler.spec.n_way
        for start in range(episodes.start, episodes.stop, chunk):
            batch = sampler.batch(start, min(start + chunk, episodes.stop))
            support = _gather(embeddings, batch.support)
            query = _gather(embeddings, batch.query)
            logits = learner.logits_from_embeddings(support, torch.from_numpy(batch.support_labels), n_way, query)
            position = start - episodes.start
            accuracies[position : position + len(batch)] = _accuracy(
                logits, torch.from_numpy(batch.query_labels)).numpy()
        return accuracies
    for number, episode in enumerate(sampler.episodes(episodes.start, episodes.stop)):
        accuracies[number] = _score_episode(learner, embeddings[torch.from_numpy(episode.support)],
                                            embeddings[torch.from_numpy(episode.query)], episode)
    return accuracies


def _score_episode(learner, support: torch.Tensor, query: torch.Tensor, episode: Episode) -> float:
    logits = learner.logits_from_embeddings(
        support[None], torch.from_numpy(episode.support_labels), episode.n_way, query[None]
    )
    return float(_accuracy(logits, torch.from_numpy(episode.query_labels)[None])[0])


@torch.no_grad()
def evaluate_per_episode(learner, source, episodes: Iterable[Episode]) -> np.ndarray:
    """Per-episode accuracy from ``learner.predict`` on each episode's own images (the reference loop)."""
    accuracies = []
    for episode in episodes:
        logits = learner.predict(stack_images(source, episode.support), torch.from_numpy(episode.support_labels),
                                 stack_images(source, episode.query))
        accuracies.append(float((logits.argmax(-1).cpu() == torch.from_numpy(episode.query_labels)).double().mean()))
    return np.asarray(accuracies, dtype=np.float64)
