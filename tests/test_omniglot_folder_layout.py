"""load_omniglot on tiny fake Omniglot trees, in the folder layout and the npz layout."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from protobench.fewshot.datasets import load_omniglot

N_DRAWINGS, SIZE, BLOCK = 20, 105, 15
# character -> (set, global id); evaluation ids start at 965 as in the real characters.csv
CHARACTERS = {
    "Alpha/character01": ("background", 1),
    "Alpha/character02": ("background", 2),
    "Beta/character01": ("evaluation", 965),
}
SPLITS = {
    # deliberately not sorted: labels must follow the file order
    "train": [
        "Alpha/character02/rot000",
        "Alpha/character01/rot000",
        "Alpha/character01/rot090",
        "Beta/character01/rot180",
        "Alpha/character01/rot270",
    ],
    "val": ["Beta/character01/rot000"],
    "test": ["Alpha/character02/rot090"],
    "trainval": ["Alpha/character01/rot000", "Beta/character01/rot000"],
}
ROT = {"rot000": 0, "rot090": 1, "rot180": 2, "rot270": 3}


def paper_masks(character: str) -> np.ndarray:
    """(20, 105, 105) bool, True = paper: a 7x7 grid of random 15x15 black or white blocks."""
    seed = sum(ord(ch) for ch in character) * 31 + len(character)
    rng = np.random.Generator(np.random.PCG64(seed))
    blocks = rng.random((N_DRAWINGS, SIZE // BLOCK, SIZE // BLOCK)) < 0.6
    return blocks.repeat(BLOCK, axis=1).repeat(BLOCK, axis=2)


def write_splits(root, splits=SPLITS) -> None:
    folder = root / "splits" / "vinyals"
    folder.mkdir(parents=True)
    for name, lines in splits.items():
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n\n")


def write_folder_tree(root) -> None:
    for character, (part, number) in CHARACTERS.items():
        folder = root / f"images_{part}" / character
        folder.mkdir(parents=True)
        for k, paper in enumerate(paper_masks(character)):
            Image.fromarray(paper).save(folder / f"{number:04d}_{k + 1:02d}.png")  # mode "1"
    write_splits(root)


def write_npz_tree(root) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for part in ("background", "evaluation"):
        names = [c for c, (p, _) in CHARACTERS.items() if p == part]
        names.sort(key=lambda c: CHARACTERS[c][1])
        images = np.stack([paper_masks(c) for c in names])
        labels = np.array([CHARACTERS[c][1] for c in names])
        np.savez(root / f"images_{part}.npz", images=images, labels=labels)
    with open(root / "characters.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "set", "alphabet", "character"])
        for character, (part, number) in CHARACTERS.items():
            alphabet, name = character.split("/")
            writer.writerow([number, part, alphabet, name])
    write_splits(root)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot_folders")
    write_folder_tree(root)
    return root


@pytest.fixture(scope="module")
def npz_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot_npz")
    write_npz_tree(root)
    return root


def pure_windows(ink: np.ndarray, out: int = 28):
    """For a (105, 105) 0/1 ink image, the (28, 28) masks of output pixels whose whole
    antialiased-bilinear footprint (centre +- scale input pixels) is ink, resp. paper."""
    scale = SIZE / out
    all_ink = np.zeros((out, out), dtype=bool)
    all_paper = np.zeros((out, out), dtype=bool)
    spans = []
    for j in range(out):
        centre = (j + 0.5) * scale - 0.5
        spans.append((max(0, math.floor(centre - scale)), min(SIZE, math.ceil(centre + scale) + 1)))
    for i, (r0, r1) in enumerate(spans):
        for j, (c0, c1) in enumerate(spans):
            window = ink[r0:r1, c0:c1]
            all_ink[i, j] = window.all()
            all_paper[i, j] = not window.any()
    return all_ink, all_paper


def test_folder_layout_shapes_and_labels(folder_root):
    source = load_omniglot(folder_root, "train")
    n_classes = len(SPLITS["train"])
    assert source.images.shape == (n_classes * N_DRAWINGS, 1, 28, 28)
    assert source.images.dtype == torch.float32
    assert len(source) == n_classes * N_DRAWINGS
    assert source.labels.tolist() == np.repeat(np.arange(n_classes), N_DRAWINGS).tolist()
    assert source.class_names == SPLITS["train"]
    assert float(source.images.min()) >= 0.0 and float(source.images.max()) <= 1.0 + 1e-6
    x, y = source[N_DRAWINGS * 3 + 4]
    assert y == 3 and x.shape == (1, 28, 28)
    for split in ("val", "test", "trainval"):
        other = load_omniglot(folder_root, split)
        assert other.class_names == SPLITS[split]
        assert len(other) == len(SPLITS[split]) * N_DRAWINGS


def test_rotation_classes_are_quarter_turns(folder_root):
    source = load_omniglot(folder_root, "train")
    by_name = {name: source.images[source.labels == k] for k, name in enumerate(source.class_names)}
    upright = by_name["Alpha/character01/rot000"]
    assert torch.equal(by_name["Alpha/character01/rot090"], torch.rot90(upright, 1, dims=(2, 3)))
    assert torch.equal(by_name["Alpha/character01/rot270"], torch.rot90(upright, 3, dims=(2, 3)))
    assert not torch.equal(by_name["Alpha/character01/rot090"], upright)
    val = load_omniglot(folder_root, "val")
    assert torch.equal(by_name["Beta/character01/rot180"], torch.rot90(val.images, 2, dims=(2, 3)))


def test_ink_is_one_where_drawing_is_black(folder_root):
    source = load_omniglot(folder_root, "train")
    checked_ink = checked_paper = 0
    for label, name in enumerate(source.class_names):
        character, _, rotation = name.rpartition("/")
        images = source.images[source.labels == label][:, 0].numpy()
        for drawing, paper in zip(images, paper_masks(character), strict=True):
            ink = np.rot90(~paper, ROT[rotation]).astype(np.float64)  # same sense as torch.rot90
            all_ink, all_paper = pure_windows(ink)
            assert np.allclose(drawing[all_ink], 1.0, atol=1e-5)
            assert np.allclose(drawing[all_paper], 0.0, atol=1e-6)
            # downsampling preserves the amount of ink
            assert abs(drawing.mean() - ink.mean()) < 0.03
            checked_ink += all_ink.sum()
            checked_paper += all_paper.sum()
    assert checked_ink > 1000 and checked_paper > 1000


def test_image_size_parameter(folder_root):
    small = load_omniglot(folder_root, "val", image_size=14)
    assert small.images.shape == (N_DRAWINGS, 1, 14, 14)


@pytest.mark.parametrize("split", ["train", "val", "test", "trainval"])
def test_npz_layout_matches_folder_layout(folder_root, npz_root, split):
    from_folders = load_omniglot(folder_root, split)
    from_npz = load_omniglot(npz_root, split)
    assert torch.equal(from_folders.images, from_npz.images)
    assert np.array_equal(from_folders.labels, from_npz.labels)
    assert from_folders.class_names == from_npz.class_names


# ---------------------------------------------------------------- errors


def test_missing_split_file(tmp_path):
    write_folder_tree(tmp_path)
    (tmp_path / "splits" / "vinyals" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.txt not found.*Vinyals split lists"):
        load_omniglot(tmp_path, "test")
    assert len(load_omniglot(tmp_path, "val")) == N_DRAWINGS


def test_unknown_split_name(folder_root):
    with pytest.raises(ValueError, match="split must be one of"):
        load_omniglot(folder_root, "training")


def test_missing_data(tmp_path):
    write_splits(tmp_path)
    with pytest.raises(FileNotFoundError, match="no Omniglot data under"):
        load_omniglot(tmp_path, "train")


def test_missing_character_folder(tmp_path):
    write_folder_tree(tmp_path)
    write_splits(tmp_path / "other", {"train": ["Gamma/character07/rot000"]})
    (tmp_path / "splits").rename(tmp_path / "splits_old")
    (tmp_path / "other" / "splits").rename(tmp_path / "splits")
    with pytest.raises(ValueError, match="Gamma/character07 is in neither"):
        load_omniglot(tmp_path, "train")


def test_missing_character_in_npz(tmp_path):
    write_npz_tree(tmp_path)
    (tmp_path / "splits" / "vinyals" / "train.txt").write_text("Gamma/character07/rot000\n")
    with pytest.raises(ValueError, match=r"1 split characters are not in.*Gamma/character07"):
        load_omniglot(tmp_path, "train")


def test_missing_evaluation_npz(tmp_path):
    write_npz_tree(tmp_path)
    (tmp_path / "images_evaluation.npz").unlink()
    assert len(load_omniglot(tmp_path, "test")) == N_DRAWINGS  # background only: fine
    with pytest.raises(ValueError, match=r"images_evaluation\.npz: cannot read"):
        load_omniglot(tmp_path, "val")


def test_bad_split_entry(tmp_path):
    write_folder_tree(tmp_path)
    (tmp_path / "splits" / "vinyals" / "train.txt").write_text("Alpha/character01/rot045\n")
    with pytest.raises(ValueError, match="is not 'Alphabet/characterNN/rotDDD'"):
        load_omniglot(tmp_path, "train")


def test_corrupt_and_empty_character_folders(tmp_path):
    write_folder_tree(tmp_path)
    bad = tmp_path / "images_background" / "Alpha" / "character01" / "0001_05.png"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match=r"0001_05\.png: cannot read image"):
        load_omniglot(tmp_path, "train")
    for png in (tmp_path / "images_evaluation" / "Beta" / "character01").glob("*.png"):
        png.unlink()
    with pytest.raises(ValueError, match="holds no .png drawings"):
        load_omniglot(tmp_path, "val")


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0], ids=["half", "last-byte-missing", "empty"])
def test_truncated_npz_is_named(tmp_path, keep):
    write_npz_tree(tmp_path)
    npz = tmp_path / "images_background.npz"
    npz.write_bytes(npz.read_bytes()[: int(npz.stat().st_size * keep)])
    with pytest.raises(ValueError, match=r"images_background\.npz: cannot read Omniglot images"):
        load_omniglot(tmp_path, "train")


def rewrite_csv(root, rows) -> None:
    with open(root / "characters.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize(("rows", "message"), [
    ([["id", "set", "alphabet", "character"], [1, "background", "Alpha", "character01"],
      [2, "background", "Alpha"]],
     r"characters\.csv, row 3: missing character"),
    ([["id", "set", "alphabet", "character"], [1, "background", "Alpha", "character01"],
      ["two", "background", "Alpha", "character02"]],
     r"characters\.csv, row 3: id 'two' is not an integer"),
    ([["id", "set", "alphabet", "character"], ["", "background", "Alpha", "character01"]],
     r"characters\.csv, row 2: missing id"),
    ([["id", "set", "alphabet", "character"], [1, "backgorund", "Alpha", "character01"]],
     r"characters\.csv, row 2: set 'backgorund' is neither 'background' nor 'evaluation'"),
    ([["id", "set", "alphabet", "character"], [1, "background", "Alpha", "character01", "extra"]],
     r"characters\.csv, row 2: 5 fields, the header has 4"),
    ([["id", "set", "alphabet"], [1, "background", "Alpha"]],
     r"characters\.csv: the header lacks the column\(s\) character"),
    ([["id", "set", "alphabet", "character"], [7000, "evaluation", "Beta", "character01"]],
     r"characters\.csv, row 2: id 7000 is not in .*images_evaluation\.npz \(ids 965-965\)"),
], ids=["missing-column", "non-integer-id", "empty-id", "unknown-set", "extra-field", "bad-header", "id-too-large"])
def test_bad_characters_csv_rows_are_named(tmp_path, rows, message):
    write_npz_tree(tmp_path)
    rewrite_csv(tmp_path, rows)
    with pytest.raises(ValueError, match=message):
        load_omniglot(tmp_path, "trainval")


def test_missing_characters_csv_says_what_is_needed(tmp_path):
    write_npz_tree(tmp_path)
    (tmp_path / "characters.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"characters\.csv not found: the npz layout needs it"):
        load_omniglot(tmp_path, "train")
