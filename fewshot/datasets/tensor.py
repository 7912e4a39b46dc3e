"""An in-memory labelled source backed by one tensor of examples."""

from __future__ import annotations

import numpy as np
import torch

from protobench.fewshot.sampler import check_labels


class TensorSource:
    """Examples ``images[i]`` with integer ``labels[i]``; ``class_names[c]`` names label c."""

    def __init__(self, images: torch.Tensor, labels, class_names: list[str] | None = None) -> None:
        self.labels = check_labels(labels)
        if len(images) != len(self.labels):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        self.images = images
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, classes) -> TensorSource:
        """The examples of the given label values, relabelled 0..len(classes)-1 in that order."""
        classes = np.asarray(classes, dtype=np.int64)
        missing = np.setdiff1d(classes, self.labels)
        if missing.size:
            raise ValueError(f"classes not in the source: {missing[:10].tolist()}")
        keep = np.isin(self.labels, classes)
        relabel = {int(c): i for i, c in enumerate(classes)}
        labels = np.array([relabel[int(y)] for y in self.labels[keep]], dtype=np.int64)
        names = [self.class_names[c] for c in classes] if self.class_names else None
        return TensorSource(self.images[torch.from_numpy(np.flatnonzero(keep))], labels, names)

    @classmethod
    def concatenate(cls, sources: list[TensorSource]) -> TensorSource:
        """The examples of ``sources`` one after another; the classes of each source are numbered after
        those of the ones before it (for example train + val classes as one ``trainval`` source)."""
        offsets = np.cumsum([0] + [int(source.labels.max()) + 1 for source in sources[:-1]])
        labels = np.concatenate([source.labels + offset for source, offset in zip(sources, offsets, strict=True)])
        named = all(source.class_names is not None for source in sources)
        names = [name for source in sources for name in source.class_names] if named else None
        return cls(torch.cat([source.images for source in sources]), labels, names)

