"""A generic image-folder source: ``root/<class name>/<image file>``, one folder per class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protobench.fewshot.datasets.image_file import image_to_tensor, open_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class ImageFolderSource:
    """Images loaded lazily from class folders; classes sorted by name, labels 0..C-1.

    ``transform`` maps a PIL image to a tensor (default: float tensor in [0, 1], C x H x W).
    Folders whose names start with "." (``.ipynb_checkpoints``, ``.git``) are not classes. A class
    folder without images, and a file that cannot be decoded, raise ValueError naming it.
    ``class_names[c]`` is the folder of label c (an episode sampler's errors name classes by it).
    """

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 mode: str = "RGB") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.class_names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.class_names:
            raise ValueError(f"no images under {self.root}: expected {self.root}/<class>/<image>{IMAGE_SUFFIXES}")
        files, labels = [], []
        for label, name in enumerate(self.class_names):
            found = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"no images under the class folder {self.root / name} (expected files ending in "
                                 f"{', '.join(IMAGE_SUFFIXES)}): add images to it or remove it")
            files += found
            labels += [label] * len(found)
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = open_image(self.files[i], self.mode)
        tensor = self.transform(image) if self.transform is not None else image_to_tensor(image)
        return tensor, int(self.labels[i])
