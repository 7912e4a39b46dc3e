"""Validation curves of the Omniglot reproduction: accuracy on the validation classes against training episodes.

Reads few-shot result files of benchmark ``omniglot`` (one per test setting; the curve is the
model's, so files of one model give one curve) and writes the curves as data (CSV: model,
protocol of the validation episodes, episode, validation accuracy, training loss, seconds) and as a
plot (PNG, one panel per model). For a two-stage result (``training.stage == "retrain"``) the
curve is stage 1's, the one the episode count was chosen on, and the chosen count is marked.

Run: ``python docs/omniglot_curves.py leaderboard/results/omniglot__*.json --out docs/omniglot-curves``
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402 - after choosing the backend


def model_curves(paths: list[Path]) -> dict[str, dict]:
    """Configuration -> {"curve": [...], "val": validation setting, "chosen": episode count, "label": text}."""
    curves: dict[str, dict] = {}
    for path in paths:
        result = json.loads(path.read_text(encoding="utf-8"))
        if result.get("kind") != "fewshot" or result["benchmark"]["name"] != "omniglot":
            continue
        training = result["training"]
        stage1 = training.get("stage1", training)
        configuration = result["method"].get("configuration", result["method"]["name"])
        val = result["method"]["params"].get("val") or {}
        protocol = f"{val.get('n_way')}-way {val.get('n_shot')}-shot" if val else "val"
        retrained = training.get("stage") == "retrain"
        how = f"train, then retrain on {training['train_split']}" if retrained else "train only"
        curves.setdefault(configuration, {
            "curve": [point for point in stage1.get("curve", []) if point.get("val_accuracy") is not None],
            "val": protocol, "chosen": training.get("chosen_episodes", stage1.get("selected_episode")),
            "label": f"{configuration} ({how})"})
    return curves


def write_csv(curves: dict[str, dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "validation", "episode", "val_accuracy", "train_loss", "seconds"])
        for configuration, item in curves.items():
            for point in item["curve"]:
                writer.writerow([configuration, item["val"], point["episode"], f"{point['val_accuracy']:.6f}",
                                 f"{point['train_loss']:.6f}", point["seconds"]])


def plot(curves: dict[str, dict], path: Path) -> None:
    fig = Figure(figsize=(5.2 * max(1, len(curves)), 3.6))
    for i, item in enumerate(curves.values(), start=1):
        ax = fig.add_subplot(1, len(curves), i)
        episodes = [p["episode"] for p in item["curve"]]
        accuracies = [100 * p["val_accuracy"] for p in item["curve"]]
        ax.plot(episodes, accuracies, marker="o", markersize=3)
        if item["chosen"] in episodes:
            ax.axvline(item["chosen"], color="grey", linestyle=":", label=f"chosen: {item['chosen']} episodes")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(item["label"], fontsize=9)
        ax.set_xlabel("training episodes")
        ax.set_ylabel(f"validation accuracy, {item['val']} (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="few-shot result files of benchmark omniglot")
    parser.add_argument("--out", type=Path, required=True, help="output stem: writes <out>.csv and <out>.png")
    args = parser.parse_args(argv)
    curves = model_curves(args.results)
    if not curves:
        raise SystemExit("no omniglot result files with a training curve among the given files")
    write_csv(curves, args.out.with_suffix(".csv"))
    plot(curves, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.png')} ({len(curves)} models)")


if __name__ == "__main__":
    main()
