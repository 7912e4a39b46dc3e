"""mini-ImageNet (Vinyals et al. 2016) in the split of Ravi & Larochelle (2017), read from its CSV layout.

Layout under ``root``::

    images/<filename>            84x84 RGB JPEGs (larger ones are resized to 84x84 when read)
    splits/ravi/train.csv        header ``filename,label``, then one row per image;
    splits/ravi/val.csv          ``label`` is the class's ImageNet wnid (64 / 16 / 20 classes,
    splits/ravi/test.csv         600 images each)

Copies often lack the train images (only val and test may be present): loading a split checks that
every listed image is there and says which split's images are missing.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protobench.fewshot.datasets.image_file import image_to_tensor, open_image

SPLITS = ("train", "val", "test")
IMAGE_SIZE = 84
_SHOWN = 5  # how many missing or repeated file names an error lists


def _resize_to_tensor(image: Image.Image) -> torch.Tensor:
    """The default transform: 84x84 (PIL bilinear, antialiased, when not already) float tensor in [0, 1]."""
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return image_to_tensor(image)


def read_split_csv(path: Path) -> list[tuple[str, str]]:
    """The ``(filename, wnid)`` rows of a Ravi split CSV, in file order.

    Raises FileNotFoundError when the file is absent and ValueError, naming the file and line, for a
    wrong header, a row without exactly two non-empty fields, or a file name listed twice.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: mini-ImageNet needs the Ravi split CSVs under {path.parent}/ "
                                f"({', '.join(f'{split}.csv' for split in SPLITS)})")
    rows, seen = [], {}
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["filename", "label"]:
            raise ValueError(f"{path}: the first line must be the header 'filename,label', got {header}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{path}, line {line}: expected 'filename,label', got {row}")
            filename, wnid = row[0].strip(), row[1].strip()
            if filename in seen:
                raise ValueError(f"{path}, line {line}: {filename} is already listed on line {seen[filename]}")
            seen[filename] = line
            rows.append((filename, wnid))
    if not rows:
        raise ValueError(f"{path} lists no images")
    return rows


def _check_images_present(images: Path, split: str, rows: list[tuple[str, str]]) -> None:
    """ValueError when listed images are absent: the whole split's, or the classes short of images."""
    if not images.is_dir():
        raise FileNotFoundError(f"image folder {images} does not exist: mini-ImageNet expects images/<filename> "
                                "beside splits/")
    present = set(os.listdir(images))
    missing = [(filename, wnid) for filename, wnid in rows if filename not in present]
    if not missing:
        return
    if len(missing) == len(rows):
        raise ValueError(f"the {split} split's images are missing: none of the {len(rows)} images listed in "
                         f"{split}.csv is in {images} (for example {rows[0][0]}). Copies of mini-ImageNet often "
                         f"hold only some splits' images; add the {split} images or use another split.")
    listed = Counter(wnid for _, wnid in rows)
    short: dict[str, list[str]] = {}
    for filename, wnid in missing:
        short.setdefault(wnid, []).append(filename)
    classes = "; ".join(f"{wnid} has {listed[wnid] - len(names)} of its {listed[wnid]} listed images, missing "
                        f"{', '.join(names[:_SHOWN])}{' ...' if len(names) > _SHOWN else ''}"
                        for wnid, names in sorted(short.items()))
    raise ValueError(f"{len(missing)} images listed in {split}.csv are not in {images}: {classes}. "
                     "Restore those files, or remove their rows from the CSV.")


class MiniImageNetSource:
    """Images of one split, loaded lazily: ``labels`` (int64), ``class_names`` (wnids), ``files``.

    Classes are numbered 0..C-1 in sorted wnid order (the order of first appearance in the standard
    CSVs, too); examples keep the CSV's row order. ``source[i]`` is ``(image, label)``, where image is
    ``transform(PIL RGB image)``, by default a float32 tensor (3, 84, 84) in [0, 1]. A file that cannot
    be decoded raises ValueError naming it.
    """

    def __init__(self, root: str | Path, split: str,
                 transform: Callable[[Image.Image], torch.Tensor] | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        rows = read_split_csv(self.root / "splits" / "ravi" / f"{split}.csv")
        _check_images_present(self.root / "images", split, rows)
        self.class_names = sorted({wnid for _, wnid in rows})
        index = {wnid: label for label, wnid in enumerate(self.class_names)}
        self.files = [self.root / "images" / filename for filename, _ in rows]
        self.labels = np.asarray([index[wnid] for _, wnid in rows], dtype=np.int64)
        self.transform = transform if transform is not None else _resize_to_tensor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_image(self.files[i], "RGB")), int(self.labels[i])


def load_mini_imagenet(root: str | Path, split: str,
                       transform: Callable[[Image.Image], torch.Tensor] | None = None) -> MiniImageNetSource:
    """The Ravi ``split`` ("train", "val" or "test") of mini-ImageNet under ``root`` (see the module docstring).

    Raises FileNotFoundError for a missing CSV or image folder and ValueError for a malformed CSV or
    listed images that are absent (naming them, and the classes left with fewer images than listed).
    """
    return MiniImageNetSource(root, split, transform)
