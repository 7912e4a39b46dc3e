"""Collate a DataLoader batch of one episode into support and query tensors."""

from __future__ import annotations

import numpy as np
import torch


def collate_episode(samples: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
    """Split the samples of one :class:`~fewshot.EpisodeSampler` batch.

    The batch holds support examples grouped by class, then query examples grouped by class in
    the same class order (at least two classes). The split is read off the label runs, so
    variable-shot episodes need no side information. Returns ``support_x``, ``support_y``,
    ``query_x``, ``query_y`` (labels 0..N-1 in class order) and ``classes`` (source labels).
    """
    labels = np.array([int(y) for _, y in samples], dtype=np.int64)
    run_starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    run_labels = labels[run_starts]
    n_way = len(run_starts) // 2
    if len(run_starts) != 2 * n_way or n_way < 2 or not np.array_equal(run_labels[:n_way], run_labels[n_way:]):
        raise ValueError(
            "batch is not an episode (support grouped by class, then query in the same class "
            "order); use collate_episode with batch_sampler=EpisodeSampler(...)"
        )
    classes = run_labels[:n_way]
    split = run_starts[n_way]
    relabel = {int(c): i for i, c in enumerate(classes)}
    episode_labels = torch.tensor([relabel[int(y)] for y in labels], dtype=torch.long)
    images = torch.stack([torch.as_tensor(x) for x, _ in samples])
    return {
        "support_x": images[:split],
        "support_y": episode_labels[:split],
        "query_x": images[split:],
        "query_y": episode_labels[split:],
        "classes": torch.from_numpy(classes),
    }
