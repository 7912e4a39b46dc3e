"""ImageNet-1k top-1 accuracy of the pretrained EfficientNet-Lite0 on mini-ImageNet images: checks the weights.

Run ``python -m protobench.benchmarks.perf.efficientnet_top1 --images 300`` (data root from
``--data-root`` or ``$PROTOBENCH_DATA``). mini-ImageNet's images are ImageNet images (84x84) whose
file names start with their WordNet id; the label of each is that id's index in timm's ImageNet-1k
class list, so the 1000-way top-1 measures the weights and the key mapping together (a wrong
mapping scores about 0.1%, chance). The images are spread evenly over the sorted file names (so
over the 36 classes present), with no randomness. Prints top-1 and top-5 (percent) and images/s
per resolution; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from protobench.fewshot.datasets.image_file import image_to_tensor, open_image
from protobench.fewshot.pretrained import EfficientNetLite0, efficientnet_lite0, imagenet_synsets

WNID_LENGTH = 9  # "n" and eight digits


def labelled_images(root: Path, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_images`` mini-ImageNet images (n, 3, 84, 84) in [0, 1] and their ImageNet-1k class indices (n,).

    ``root`` is the mini-ImageNet folder (holding ``images/``); the files are taken at evenly
    spaced positions of the sorted names. ValueError when there are fewer files than asked or a
    file name's WordNet id is not an ImageNet-1k class.
    """
    names = sorted(name for name in os.listdir(root / "images") if name.endswith(".jpg"))
    if not 1 <= n_images <= len(names):
        raise ValueError(f"asked for {n_images} images, {root / 'images'} holds {len(names)}")
    index = {wnid: number for number, wnid in enumerate(imagenet_synsets())}
    chosen = [names[position] for position in np.linspace(0, len(names) - 1, n_images).round().astype(int)]
    unknown = sorted({name[:WNID_LENGTH] for name in chosen} - index.keys())
    if unknown:
        raise ValueError(f"file names start with WordNet ids that are not ImageNet-1k classes: {unknown[:5]}")
    images = torch.stack([image_to_tensor(open_image(root / "images" / name)) for name in chosen])
    return images, torch.tensor([index[name[:WNID_LENGTH]] for name in chosen])


@torch.no_grad()
def topk_accuracy(model: EfficientNetLite0, images: torch.Tensor, labels: torch.Tensor, k: int = 1,
                  batch_size: int = 50) -> float:
    """Fraction (0..1) of ``images`` whose ImageNet-1k label is among the model's ``k`` highest logits."""
    hits = 0
    for start in range(0, len(images), batch_size):
        logits = model.logits(images[start:start + batch_size])
        hits += (logits.topk(k, dim=1).indices == labels[start:start + batch_size, None]).any(1).sum().item()
    return hits / len(images)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="how many mini-ImageNet images")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224], help="input sides to test (pixels)")
    parser.add_argument("--data-root", type=Path, default=os.environ.get("PROTOBENCH_DATA"),
                        help="folder holding mini-imagenet/ (default: $PROTOBENCH_DATA)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.data_root is None:
        parser.error("give --data-root or set PROTOBENCH_DATA to the folder holding mini-imagenet/")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    images, labels = labelled_images(args.data_root / "mini-imagenet", args.images)
    print(f"{len(images)} mini-ImageNet images, {len(labels.unique())} classes, 1000-way ImageNet-1k labels "
          f"(chance 0.1%)")
    for resolution in args.resolutions:
        model = efficientnet_lite0(pretrained=True, resolution=resolution)
        start = time.perf_counter()
        top1 = topk_accuracy(model, images, labels, k=1)
        seconds = time.perf_counter() - start
        top5 = topk_accuracy(model, images, labels, k=5)
        print(f"resolution {resolution}: top-1 {100 * top1:.1f}%  top-5 {100 * top5:.1f}%  "
              f"({len(images) / seconds:.0f} images/s, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
