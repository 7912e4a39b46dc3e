"""The README's tables of the CLIP few-shot protocol: accuracy per method and shot count, and Proto-CLIP's
paired differences, from validated result files.

Each file holds one sampler's episodes of one test setting (``n_way``-way ``K``-shot, every other image
of the episode classes a query); the protocol's seeds are those episodes (draws). A method's cell is
the mean over the draws with their standard deviation, in percent; a difference ``Proto-CLIP - B`` is
paired draw by draw (the two files must hold the same episodes: equal episode digests) with its 95%
t interval over the draws (Student's t, n - 1 degrees of freedom), ``*`` where it excludes 0.

Run::

    python docs/clip_protocol_table.py docs/results/protoclip-clip-protocol/*.json

Every file is validated first (:func:`protobench.leaderboard.validate.validate_file`); an invalid one
stops the script with its problems.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from protobench.leaderboard.compare import T_975
from protobench.leaderboard.validate import validate_file

SHOT_SUFFIX = re.compile(r"-\d+shot$")
ORDER = ("zero-shot-text-offline", "protonet-frozen-offline", "tip-adapter-offline", "tip-adapter-f-offline",
         "proto-clip-offline", "proto-clip-f-offline")
NAMES = {"zero-shot-text-offline": "zero-shot text prototypes",
         "protonet-frozen-offline": "ProtoNet on the frozen image features", "tip-adapter-offline": "Tip-Adapter",
         "tip-adapter-f-offline": "Tip-Adapter-F", "proto-clip-offline": "Proto-CLIP (training-free)",
         "proto-clip-f-offline": "Proto-CLIP-F"}
REFERENCE = "proto-clip-offline"


def load(paths: list[Path]) -> dict[tuple[str, int], dict]:
    """(method label without its shot suffix, K) -> {"accuracy": per-draw accuracies, "digest": episodes}."""
    table: dict[tuple[str, int], dict] = {}
    for path in paths:
        problems = validate_file(path)
        if problems:
            raise SystemExit(f"{path}: not a valid result file: {'; '.join(problems)}")
        result = json.loads(path.read_text(encoding="utf-8"))
        label = SHOT_SUFFIX.sub("", result["method"]["configuration"])
        shots = int(result["benchmark"]["episode_spec"]["n_shot"])
        table[(label, shots)] = {"accuracy": 100 * np.asarray(result["evidence"]["per_episode_accuracy"]),
                                 "digest": result["episodes"]["digest"]}
    return table


def t_half_width(values: np.ndarray) -> float:
    """Half-width of the 95% Student-t interval of the mean of ``values`` (at least 2; 1.96 beyond 11)."""
    return float(T_975.get(len(values) - 1, 1.96) * values.std(ddof=1) / np.sqrt(len(values)))


def markdown(table: dict[tuple[str, int], dict]) -> str:
    shots = sorted({k for _, k in table})
    labels = [label for label in ORDER if any((label, k) in table for k in shots)]
    head = "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in shots) + " |"
    lines = ["Accuracy (%), mean ± std over the draws:", "", head, rule]
    for label in labels:
        cells = [f"{table[(label, k)]['accuracy'].mean():.2f} ± {table[(label, k)]['accuracy'].std(ddof=1):.2f}"
                 if (label, k) in table else "" for k in shots]
        lines.append(f"| {NAMES.get(label, label)} | " + " | ".join(cells) + " |")
    lines += ["", f"{NAMES[REFERENCE]} minus each method (points), paired by draw, 95% t interval, * where it "
              "excludes 0:", "", head.replace("| method |", "| Proto-CLIP - B |"), rule]
    for label in labels:
        if label == REFERENCE:
            continue
        cells = []
        for k in shots:
            if (label, k) not in table or (REFERENCE, k) not in table:
                cells.append("")
                continue
            if table[(label, k)]["digest"] != table[(REFERENCE, k)]["digest"]:
                raise SystemExit(f"{label} and {REFERENCE} at {k} shots were not scored on the same episodes")
            difference = table[(REFERENCE, k)]["accuracy"] - table[(label, k)]["accuracy"]
            half = t_half_width(difference)
            mark = " *" if abs(difference.mean()) > half else ""
            cells.append(f"{difference.mean():+.2f} ± {half:.2f}{mark}")
        lines.append(f"| B: {NAMES.get(label, label)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="result files of the CLIP protocol")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    print(markdown(load(args.files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
