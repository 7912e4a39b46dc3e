"""A generic image-folder source: ``root/<class name>/<image file>``, one folder per class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


class ImageFolderSource:
    """Images loaded lazily from class folders; classes sorted by name, labels 0..C-1.

    ``transform`` maps a PIL image to a tensor (default: float tensor in [0, 1], C x H x W).
    A file that cannot be decoded raises ValueError naming the file.
    """

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 mode: str = "RGB") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.class_names = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        files, labels = [], []
        for label, name in enumerate(self.class_names):
            found = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        if not files:
            raise ValueError(f"no images under {self.root}: expected {self.root}/<class>/<image>{IMAGE_SUFFIXES}")
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.files[i]
        try:
            with Image.open(path) as image:
                image = image.convert(self.mode)
                image.load()
        except (OSError, UnidentifiedImageError) as error:
            raise ValueError(f"{path}: cannot decode image ({error}); remove or replace the file") from error
        if self.transform is not None:
            return self.transform(image), int(self.labels[i])
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).unsqueeze(0) if array.ndim == 2 else torch.from_numpy(array).permute(2, 0, 1)
        return tensor.contiguous(), int(self.labels[i])
