"""Omniglot (Lake et al. 2015) with the Vinyals et al. 2016 split, 28x28, rotations as classes.

Two on-disk layouts are read:

- npz: ``images_background.npz`` / ``images_evaluation.npz`` (bool arrays (characters, 20, 105,
  105), True = paper) with ``characters.csv`` (columns id, set, alphabet, character) mapping ids
  to ``Alphabet/characterNN``; a truncated archive or a bad row is a ValueError naming the file
  (and the row);
- folders: the original / torchvision layout ``images_background/<Alphabet>/characterNN/*.png``
  and ``images_evaluation/...``.

Both need the split lists ``splits/vinyals/{train,val,test,trainval}.txt`` under the root
(one ``Alphabet/characterNN/rotDDD`` per line). A class is one character at one rotation.
Images are float32 (1, 28, 28) with ink = 1 and paper = 0, resized with antialiasing.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from protobench.fewshot.datasets.tensor import TensorSource
from protobench.fewshot.splits import read_class_list

SPLITS = ("train", "val", "test", "trainval")
_ROTATIONS = {"rot000": 0, "rot090": 1, "rot180": 2, "rot270": 3}


def _parse_class(name: str) -> tuple[str, int]:
    character, _, rotation = name.rpartition("/")
    if rotation not in _ROTATIONS or not character:
        raise ValueError(f"split entry {name!r} is not 'Alphabet/characterNN/rotDDD'")
    return character, _ROTATIONS[rotation]


def _ink_at_size(paper: np.ndarray, image_size: int) -> torch.Tensor:
    """Bool paper masks (n, H, W) -> float ink images (n, 1, size, size)."""
    ink = torch.from_numpy(~paper).float().unsqueeze(1)
    return F.interpolate(ink, size=(image_size, image_size), mode="bilinear", antialias=True)


CSV_COLUMNS = ("id", "set", "alphabet", "character")
_NPZ_PARTS = {"background": 1, "evaluation": 965}  # set -> id of its first character


def _read_character_ids(path: Path) -> dict[str, tuple[str, int, int]]:
    """``characters.csv``: ``Alphabet/characterNN`` -> (set, id, row). Rows are counted as in a
    spreadsheet (the header is row 1); a bad row raises ValueError naming the file and the row."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the npz layout needs it beside images_background.npz "
                                f"(columns {','.join(CSV_COLUMNS)})")
    ids = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        lacking = [column for column in CSV_COLUMNS if column not in (reader.fieldnames or [])]
        if lacking:
            raise ValueError(f"{path}: the header lacks the column(s) {', '.join(lacking)} "
                             f"(expected {','.join(CSV_COLUMNS)})")
        for row in reader:
            where = f"{path}, row {reader.line_num}"
            if None in row:
                raise ValueError(f"{where}: {len(reader.fieldnames) + len(row[None])} fields, the header has "
                                 f"{len(reader.fieldnames)}")
            empty = [column for column in CSV_COLUMNS if not (row[column] or "").strip()]
            if empty:
                raise ValueError(f"{where}: missing {', '.join(empty)}")
            try:
                number = int(row["id"])
            except ValueError:
                raise ValueError(f"{where}: id {row['id']!r} is not an integer") from None
            if row["set"] not in _NPZ_PARTS:
                raise ValueError(f"{where}: set {row['set']!r} is neither 'background' nor 'evaluation'")
            ids[f"{row['alphabet']}/{row['character']}"] = (row["set"], number, reader.line_num)
    return ids


def _read_npz_characters(root: Path, wanted: list[str]) -> dict[str, np.ndarray]:
    table = root / "characters.csv"
    ids = _read_character_ids(table)
    arrays = {}
    for part, offset in _NPZ_PARTS.items():
        path = root / f"images_{part}.npz"
        wanted_here = [name for name in wanted if ids.get(name, ("",))[0] == part]
        if not wanted_here:
            continue
        try:
            with np.load(path) as archive:
                images = archive["images"]
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise ValueError(f"{path}: cannot read Omniglot images ({type(error).__name__}: {error}); "
                             "download it again") from error
        if images.ndim != 4:
            raise ValueError(f"{path}: cannot read Omniglot images (shape {images.shape}, expected "
                             "(characters, drawings, height, width)); download it again")
        for name in wanted_here:
            _, number, row = ids[name]
            if not 0 <= number - offset < len(images):
                raise ValueError(f"{table}, row {row}: id {number} is not in {path} "
                                 f"(ids {offset}-{offset + len(images) - 1})")
            arrays[name] = images[number - offset]
    missing = [name for name in wanted if name not in arrays]
    if missing:
        raise ValueError(f"{len(missing)} split characters are not in {root}: {missing[:5]}")
    return arrays


def _read_folder_characters(root: Path, wanted: list[str]) -> dict[str, np.ndarray]:
    arrays = {}
    for name in wanted:
        folders = [root / part / name for part in ("images_background", "images_evaluation")]
        folder = next((f for f in folders if f.is_dir()), None)
        if folder is None:
            raise ValueError(f"character folder {name} is in neither images_background nor "
                             f"images_evaluation under {root}")
        drawings = []
        for png in sorted(folder.glob("*.png")):
            try:
                with Image.open(png) as image:
                    drawings.append(np.asarray(image.convert("L")) > 127)
            except OSError as error:
                raise ValueError(f"{png}: cannot read image ({error})") from error
        if not drawings:
            raise ValueError(f"{folder} holds no .png drawings")
        arrays[name] = np.stack(drawings)
    return arrays


def load_omniglot(root: str | Path, split: str, image_size: int = 28) -> TensorSource:
    """The Vinyals ``split`` of Omniglot under ``root`` as an in-memory source.

    Labels follow the order of the split file; ``class_names`` holds its entries.
    """
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    split_file = root / "splits" / "vinyals" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(
            f"{split_file} not found: Omniglot needs the Vinyals split lists under "
            f"{root}/splits/vinyals/ (train.txt, val.txt, test.txt, trainval.txt)"
        )
    class_names = read_class_list(split_file)
    parsed = [_parse_class(name) for name in class_names]
    characters = sorted({character for character, _ in parsed})
    if (root / "images_background.npz").is_file():
        paper = _read_npz_characters(root, characters)
    elif (root / "images_background").is_dir() or (root / "images_evaluation").is_dir():
        paper = _read_folder_characters(root, characters)
    else:
        raise FileNotFoundError(
            f"no Omniglot data under {root}: expected images_background.npz or images_background/"
        )
    upright = {name: _ink_at_size(paper[name], image_size) for name in characters}
    images, labels = [], []
    for label, (character, quarter_turns) in enumerate(parsed):
        drawings = torch.rot90(upright[character], k=quarter_turns, dims=(2, 3))
        images.append(drawings)
        labels.append(np.full(len(drawings), label, dtype=np.int64))
    return TensorSource(torch.cat(images).contiguous(), np.concatenate(labels), class_names)
