"""What will this design cost on my model?  `python -m trainables.count --preset mam --model facebook/bart-large`

MODEL is a hub name, a local model folder or a config.json; the paper's backbones are bundled, so they work offline.
"""

from __future__ import annotations

import argparse
import json
import sys

from trainables.configs import load_config
from trainables.counting import TASKS, count_params
from trainables.presets import get_preset, load_presets

JSON_KEYS = ("trainable", "stored", "paper", "backbone", "fraction", "paper_percent", "petl_trainable", "task_head")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.count", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="a named method of the paper (see --list-presets)")
    p.add_argument("--model", help="hub name, local model folder, or config.json")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="which task model to price (default: the family's usual one, e.g. seq2seq for BART)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name, preset in sorted(load_presets().items()):
            print(f"{name:<18} {preset.method}")
        return 0
    if not args.preset or not args.model:
        build_parser().error("--preset and --model are required (or --list-presets)")
    try:
        preset = get_preset(args.preset)
        counts = count_params(preset.design, load_config(args.model), args.task)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    d = counts.to_dict()
    if args.json:
        print(json.dumps({k: d[k] for k in JSON_KEYS}))
        return 0
    print(f"{preset.name} on {args.model}: {preset.method}")
    print(preset.design.describe())
    rows = [
        ("trainable", f"{counts.trainable:,}", "what the optimiser updates (prefix MLP, biases, LNs, task head)"),
        ("  petl", f"{counts.petl_trainable:,}", "of which added by the design"),
        ("  task head", f"{counts.task_head:,}", "of which the classification head"),
        ("stored", f"{counts.stored:,}", "kept after training (prefix MLP folded), task head excluded"),
        ("paper", f"{counts.paper:,}", "the paper's convention: weight matrices only"),
        ("backbone", f"{counts.backbone:,}", "the pretrained model, task head excluded"),
        ("fraction", f"{100 * counts.fraction:.3f}%", "stored / backbone: the search objective"),
        ("paper %", f"{counts.paper_percent:.2f}%", "paper / 409.6M for BART and mBART, as the paper did"),
    ]
    for name, value, note in rows:
        print(f"  {name:<12}{value:>16}   {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
