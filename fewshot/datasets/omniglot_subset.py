"""A small Omniglot subset shipped inside the package: Omniglot few-shot episodes with nothing to download.

The file ``data/omniglot_subset.npz`` (about 260 KB; licence and source in ``data/OMNIGLOT_NOTICE.txt``) is
made by :func:`build_omniglot_subset` from the full Omniglot in the npz layout read by
:func:`protobench.fewshot.datasets.load_omniglot` (``images_background.npz``, ``images_evaluation.npz``,
``characters.csv``). The characters are chosen by a fixed rule on the ids of ``characters.csv`` (rows in
alphabet order, so every alphabet contributes):

- ``train``: background characters with ``(id - 1) % 3 == 0`` (ids 1, 4, 7, ...): 322 characters, 30 alphabets;
- ``val``: background characters with ``(id - 1) % 12 == 1`` (ids 2, 14, 26, ...): 81 characters, none of them
  in ``train`` but from the same 30 alphabets (a validation split for early stopping, easier than ``test``);
- ``test``: evaluation characters with ``(id - 965) % 6 == 0`` (ids 965, 971, ...): 110 characters from the
  20 evaluation alphabets, which no training character shares (Lake et al.'s background/evaluation split).

Each character keeps its 20 drawings, resized from 105x105 to 28x28 with antialiasing exactly as
``load_omniglot`` does and binarised (ink where the resized ink value is >= 0.5), stored bit-packed. With
``rotations=True`` every character at 0, 90, 180 and 270 degrees is its own class (the Vinyals protocol):
1288 / 324 / 440 classes of 20 images.

Rebuild (byte-identical for the same numpy, torch and zlib: the zip entries carry a fixed date)::

    python -m protobench.fewshot.datasets.omniglot_subset --build /path/to/omniglot [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from protobench.fewshot.datasets.omniglot import _ink_at_size, _read_npz_characters
from protobench.fewshot.datasets.tensor import TensorSource

SUBSET_FILE = Path(__file__).resolve().parent / "data" / "omniglot_subset.npz"
SPLITS = ("train", "val", "test")
STORED_SIZE = 28
N_DRAWINGS = 20
_FIRST_EVALUATION_ID = 965
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold; fixed so that builds are identical
_ROTATION_NAMES = ("rot000", "rot090", "rot180", "rot270")


def _in_split(split: str, part: str, character_id: int) -> bool:
    """The selection rule of the module docstring."""
    if split == "train":
        return part == "background" and (character_id - 1) % 3 == 0
    if split == "val":
        return part == "background" and (character_id - 1) % 12 == 1
    return part == "evaluation" and (character_id - _FIRST_EVALUATION_ID) % 6 == 0


def subset_characters(source_root: str | Path) -> dict[str, list[str]]:
    """The ``Alphabet/characterNN`` names of each split, in id order, from ``source_root/characters.csv``."""
    path = Path(source_root) / "characters.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give the root of the full Omniglot in the npz layout "
                                "(characters.csv, images_background.npz, images_evaluation.npz)")
    with open(path, newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: int(row["id"]))
    return {split: [f"{row['alphabet']}/{row['character']}" for row in rows
                    if _in_split(split, row["set"], int(row["id"]))] for split in SPLITS}


def subset_arrays(source_root: str | Path) -> dict[str, np.ndarray]:
    """What the subset file holds: for each split, ``<split>_characters`` (names, unicode) and ``<split>_ink``.

    ``<split>_ink`` is uint8 (characters, 20, 98): each drawing's 28x28 ink mask, row-major, packed with
    ``numpy.packbits`` (784 bits = 98 bytes).
    """
    characters = subset_characters(source_root)
    paper = _read_npz_characters(Path(source_root), [name for names in characters.values() for name in names])
    arrays = {}
    for split, names in characters.items():
        stacked = np.stack([paper[name] for name in names])  # (n, 20, 105, 105), True = paper
        ink = _ink_at_size(stacked.reshape(-1, *stacked.shape[2:]), STORED_SIZE).numpy() >= 0.5
        arrays[f"{split}_characters"] = np.asarray(names, dtype=str)
        arrays[f"{split}_ink"] = np.packbits(ink.reshape(len(names), N_DRAWINGS, -1), axis=-1)
    return arrays


def write_npz_deterministic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` that ``numpy.load`` reads, identical bytes for identical arrays.

    Unlike ``numpy.savez_compressed`` it stamps no clock time: entries are in sorted name order, dated
    1980-01-01, with fixed permissions, deflate level 9. Arrays that would need pickling are refused.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(arrays):
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = 3  # Unix, whatever the platform that builds
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, payload.getvalue(), compresslevel=9)
    Path(path).write_bytes(buffer.getvalue())


def build_omniglot_subset(source_root: str | Path, out: str | Path = SUBSET_FILE) -> Path:
    """Build the subset file from the full Omniglot under ``source_root`` (npz layout) into ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_npz_deterministic(out, subset_arrays(source_root))
    return out


def load_omniglot_subset(split: str, image_size: int = 28, rotations: bool = True) -> TensorSource:
    """The packaged subset's ``split`` ("train", "val" or "test") as an in-memory source.

    Images are float32 (n, 1, image_size, image_size), ink = 1 and paper = 0; they are stored binary at
    28x28, so another ``image_size`` is resampled from those (bilinear, antialiased; no longer binary).
    With ``rotations`` each character gives four classes, ``Alphabet/characterNN/rot000`` .. ``rot270``
    (labels ``4 * c + r`` for character c at r quarter turns, as ``torch.rot90`` turns them and in the
    order of the Vinyals split lists); without, one class per character, named ``.../rot000``.
    Examples are grouped by label, 20 per class.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if not SUBSET_FILE.is_file():
        raise FileNotFoundError(f"{SUBSET_FILE} is missing from the installed package: reinstall protobench, or "
                                "rebuild it with `python -m protobench.fewshot.datasets.omniglot_subset --build ROOT`")
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


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--build SRC_ROOT [--out FILE]``; prints the file written, its size and sha256."""
    parser = argparse.ArgumentParser(prog="python -m protobench.fewshot.datasets.omniglot_subset",
                                     description="Build the packaged Omniglot subset from the full Omniglot.")
    parser.add_argument("--build", metavar="SRC_ROOT", required=True, type=Path,
                        help="folder of the full Omniglot in the npz layout (characters.csv, images_*.npz)")
    parser.add_argument("--out", type=Path, default=SUBSET_FILE, help=f"file to write (default: {SUBSET_FILE})")
    args = parser.parse_args(argv)
    out = build_omniglot_subset(args.build, args.out)
    data = out.read_bytes()
    print(f"{out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
