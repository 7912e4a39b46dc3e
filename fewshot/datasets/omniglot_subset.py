"""A small Omniglot subset shipped inside the package: Omniglot few-shot episodes with nothing to download.

The file ``data/omniglot_subset.npz`` (about 260 KB; licence and source in ``data/OMNIGLOT_NOTICE.txt``) is
made by :mod:`protobench.fewshot.datasets.omniglot_subset_build` from the full Omniglot. The characters are
chosen by a fixed rule on the ids of Omniglot's ``characters.csv`` (rows in alphabet order, so every
alphabet contributes):

- ``train``: background characters with ``(id - 1) % 3 == 0`` (ids 1, 4, 7, ...): 322 characters, 30 alphabets;
- ``val``: background characters with ``(id - 1) % 12 == 1`` (ids 2, 14, 26, ...): 81 characters, none of them
  in ``train`` but from the same 30 alphabets (a validation split for early stopping, easier than ``test``);
- ``test``: evaluation characters with ``(id - 965) % 6 == 0`` (ids 965, 971, ...): 110 characters from the
  20 evaluation alphabets, which no training character shares (Lake et al.'s background/evaluation split).

Each character keeps its 20 drawings, resized from 105x105 to 28x28 with antialiasing exactly as
:func:`~protobench.fewshot.datasets.load_omniglot` does and binarised (ink where the resized ink value is
>= 0.5). With ``rotations=True`` every character at 0, 90, 180 and 270 degrees is its own class (the
Vinyals protocol): 1288 / 324 / 440 classes of 20 images.

File format (a ``.npz``): for each split, ``<split>_characters`` (``Alphabet/characterNN``, unicode) and
``<split>_ink``, uint8 (characters, 20, 98): each drawing's 28x28 ink mask, row-major, packed with
``numpy.packbits`` (784 bits = 98 bytes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from protobench.fewshot.datasets.tensor import TensorSource

SUBSET_FILE = Path(__file__).resolve().parent / "data" / "omniglot_subset.npz"
SPLITS = ("train", "val", "test")
STORED_SIZE = 28
N_DRAWINGS = 20
_ROTATION_NAMES = ("rot000", "rot090", "rot180", "rot270")


def load_omniglot_subset(split: str, image_size: int = 28, rotations: bool = True) -> TensorSource:
    """The packaged subset's ``split`` ("train", "val" or "test") as an in-memory source.

    Images are float32 (n, 1, image_size, image_size), ink = 1 and paper = 0; they are stored binary at
    28x28, so another ``image_size`` is resampled from those (bilinear, antialiased; no longer binary).
    With ``rotations`` each character gives four classes, ``Alphabet/characterNN/rot000`` .. ``rot270``
    (labels ``4 * c + r`` for character c turned r quarter turns by ``torch.rot90``, as ``load_omniglot``
    turns them and in the order of the Vinyals split lists); without, one class per character, named
    ``.../rot000``. Examples are grouped by label, 20 per class.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if not SUBSET_FILE.is_file():
        raise FileNotFoundError(
            f"{SUBSET_FILE} is missing from the installed package: reinstall protobench, or rebuild it with "
            "`python -m protobench.fewshot.datasets.omniglot_subset_build --build OMNIGLOT_ROOT`"
        )
    with np.load(SUBSET_FILE) as stored:
        names = [str(name) for name in stored[f"{split}_characters"]]
        packed = stored[f"{split}_ink"]
    bits = np.unpackbits(packed, axis=-1, count=STORED_SIZE * STORED_SIZE)
    upright = torch.from_numpy(bits.reshape(-1, 1, STORED_SIZE, STORED_SIZE)).float()
    if image_size != STORED_SIZE:
        upright = F.interpolate(upright, size=(image_size, image_size), mode="bilinear", antialias=True)
    upright = upright.reshape(len(names), N_DRAWINGS, 1, image_size, image_size)
    turns = range(4) if rotations else range(1)
    images = torch.stack([torch.rot90(upright, k=k, dims=(3, 4)) for k in turns], dim=1)
    class_names = [f"{name}/{_ROTATION_NAMES[k]}" for name in names for k in turns]
    labels = np.repeat(np.arange(len(class_names), dtype=np.int64), N_DRAWINGS)
    return TensorSource(images.reshape(-1, 1, image_size, image_size).contiguous(), labels, class_names)
