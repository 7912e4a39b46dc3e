"""Build the packaged Omniglot subset (:mod:`protobench.fewshot.datasets.omniglot_subset`) from the full Omniglot.

The source is the npz layout read by :func:`protobench.fewshot.datasets.load_omniglot`: ``characters.csv``,
``images_background.npz`` and ``images_evaluation.npz``. The selection rule and the file format are those
documented in :mod:`~protobench.fewshot.datasets.omniglot_subset`. The output is byte-identical from one
build to the next and across platforms (for the same numpy, torch and zlib): the zip is written here with
every entry's date, system, permissions, order and compression level fixed, rather than left to
``numpy.savez_compressed`` and ``zipfile``'s defaults (which, for one, record the building platform). Command
line::

    python -m protobench.fewshot.datasets.omniglot_subset_build --build OMNIGLOT_ROOT [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from protobench.fewshot.datasets.omniglot import _ink_at_size, _read_npz_characters
from protobench.fewshot.datasets.omniglot_subset import N_DRAWINGS, SPLITS, STORED_SIZE, SUBSET_FILE

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold; fixed so that builds are identical
_FIRST_EVALUATION_ID = 965


def _in_split(split: str, part: str, character_id: int) -> bool:
    """The selection rule documented in :mod:`protobench.fewshot.datasets.omniglot_subset`."""
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
    """The arrays of the subset file (``<split>_characters``, ``<split>_ink``) from the full Omniglot."""
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

    Entries are in sorted name order, dated :data:`ZIP_DATE`, Unix permissions 0644, deflate level 9.
    Arrays that would need pickling (object dtype) are refused with ValueError.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(arrays):
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
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


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--build OMNIGLOT_ROOT [--out FILE]``; prints the file written, its size and sha256."""
    parser = argparse.ArgumentParser(prog="python -m protobench.fewshot.datasets.omniglot_subset_build",
                                     description="Build the packaged Omniglot subset from the full Omniglot.")
    parser.add_argument("--build", metavar="OMNIGLOT_ROOT", required=True, type=Path,
                        help="folder of the full Omniglot in the npz layout (characters.csv, images_*.npz)")
    parser.add_argument("--out", type=Path, default=SUBSET_FILE, help=f"file to write (default: {SUBSET_FILE})")
    args = parser.parse_args(argv)
    out = build_omniglot_subset(args.build, args.out)
    data = out.read_bytes()
    print(f"{out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
