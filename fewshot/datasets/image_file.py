"""Decoding one image file into a PIL image or a float tensor, shared by the lazily-loading sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def open_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """The image at ``path``, fully decoded and converted to PIL ``mode`` ("RGB", "L", ...).

    A file that cannot be decoded (corrupt, truncated, not an image) raises ValueError naming it.
    """
    try:
        with Image.open(path) as image:
            converted = image.convert(mode)
            converted.load()
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: cannot decode image ({error}); remove or replace the file") from error
    return converted


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a float32 tensor (channels, height, width) with values in [0, 1] (8-bit / 255)."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).unsqueeze(0) if array.ndim == 2 else torch.from_numpy(array).permute(2, 0, 1)
    return tensor.contiguous()
