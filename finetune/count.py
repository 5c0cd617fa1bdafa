"""What will this design cost on my model?  `python -m finetune.count --preset mam --model facebook/bart-large`

MODEL is a hub name, a local model folder or a config.json; the paper's backbones are bundled, so they work offline.
"""

from __future__ import annotations

import argparse
import json
import sys

from finetune.presets import get_preset, load_presets
from finetune.tasks import get_task
from finetune.vocabulary import TASK_KINDS

JSON_KEYS = ("trainable", "stored", "paper", "backbone", "fraction", "paper_percent", "petl_trainable", "task_head")


def build_parser() -> argparse.ArgumentParser:
    """The flags of petl-search / petl-trial where they mean the same (--model, --dataset); torch loads only after
    parsing, so --help is instant."""
    p = argparse.ArgumentParser(prog="petl-count", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="a named method of the paper (see --list-presets)")
    p.add_argument("--model", help="hub name, local model folder, config.json, or 'minilm' (the packaged MiniLM); "
                   "default with --dataset: the task's checkpoint")
    p.add_argument("--dataset", default=None, help="price it as a trial of this task would: en-ro, xsum, mnli, sst2, "
                   "toy-cls, toy-s2s (its head, its label count, and its checkpoint unless --model is given)")
    p.add_argument("--kind", "--task", dest="kind", choices=TASK_KINDS, default=None,
                   help="the model's head without --dataset (default: the family's usual one, e.g. seq2seq for BART; "
                   "--task is the old spelling of this flag)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    return p


def _config_and_kind(args: argparse.Namespace) -> tuple[object, str | None, str]:
    """(model config, head kind, what was priced) from --model / --dataset / --kind."""
    # deferred on purpose: hubconfigs and models load transformers and torch; --help and --list-presets need neither
    from finetune.hubconfigs import load_config
    from finetune.models import config_for, resolve_model_path

    if args.dataset is not None:
        task = get_task(args.dataset)
        if args.kind is not None and args.kind != task.kind:
            raise ValueError(f"--kind {args.kind} contradicts --dataset {task.name} ({task.kind}); drop --kind")
        return config_for(task, args.model), task.kind, args.model or task.model
    path = resolve_model_path(get_task("toy-cls"), args.model)  # the task matters only for model=None
    return load_config(path), args.kind, args.model


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        for name, preset in sorted(load_presets().items()):
            print(f"{name:<18} {preset.method}")
        return 0
    if not args.preset or not (args.model or args.dataset):
        parser.error("--preset and --model (or --dataset) are required (or --list-presets)")
    from finetune.accounting import count_params  # deferred on purpose: torch and transformers, after argument errors

    try:
        preset = get_preset(args.preset)
        config, kind, priced = _config_and_kind(args)
        counts = count_params(preset.design, config, kind)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    d = counts.to_dict()
    if args.json:
        print(json.dumps({k: d[k] for k in JSON_KEYS}))
        return 0
    print(f"{preset.name} on {priced}: {preset.method}")
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
