"""Run one trial alone: `python -m trainables.trial --preset mam_glue --dataset sst2 --model minilm --data-dir DIR`.

Trains one design point on one task with a progress bar and prints a one-line result. The design is a preset name
or a YAML file in the nested design-point form; any training setting can be overridden with `--set key=value`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

from trainables.config import TrainConfig, parse_overrides
from trainables.design import DesignPoint
from trainables.presets import get_preset
from trainables.report import TrialFailure


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.trial", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="a named method of the paper (python -m trainables.count --list-presets)")
    what.add_argument("--design", help="a YAML file holding one design point (nested form, see spaces/README.md)")
    p.add_argument("--dataset", required=True, help="task: en-ro, xsum, mnli, sst2, toy-cls, toy-s2s")
    p.add_argument("--model", default=None,
                   help="checkpoint folder or hub name; 'minilm' = the packaged pretrained MiniLM; "
                        "default: the task's (a tiny random model for toy tasks)")
    p.add_argument("--data-dir", default=None, help="local files in the task's format instead of the hub")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: the task's recipe)")
    p.add_argument("--eval-every", type=int, default=None, help="optimizer steps between evaluations")
    p.add_argument("--out", default=None, help="folder for PETL-only checkpoints; rerunning with it resumes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any training setting, e.g. --set lr=3e-4 --set batch_size=16 (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from trainables.loop import train  # heavy imports after argument errors

    try:
        design = (get_preset(args.preset).design if args.preset
                  else DesignPoint.from_dict(yaml.safe_load(Path(args.design).read_text())))
        overrides = parse_overrides(args.set)
        for key, value in (("model", args.model), ("data_dir", args.data_dir), ("max_steps", args.max_steps),
                           ("eval_every", args.eval_every), ("out_dir", args.out)):
            if value is not None:
                overrides[key] = value
        cfg = TrainConfig.for_task(args.dataset, **overrides)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar = tqdm(total=cfg.max_steps, desc=f"{args.preset or Path(args.design).stem} on {cfg.task}", unit="step",
               disable=args.json)

    def on_step(step: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(0)

    try:
        result = train(design, cfg, on_step=on_step)
    except TrialFailure as err:
        bar.close()
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        bar.close()
        print(f"error: {err}", file=sys.stderr)
        return 2
    bar.close()
    line = {"task": cfg.task, "score": result.score, "best_score": result.best_score, "step": result.step,
            "fraction": result.counts.fraction, "stored": result.counts.stored,
            "trainable": result.counts.trainable, "tokens_per_s": result.last.get("tokens_per_s"),
            "out": result.out_dir}
    if args.json:
        print(json.dumps(line))
    else:
        print(f"{cfg.task}: score {result.score:.4f} (best {result.best_score:.4f}) after {result.step} steps | "
              f"{result.counts.stored:,} stored params = {100 * result.counts.fraction:.3f}% of the backbone | "
              f"{result.last.get('tokens_per_s', 0):,.0f} tokens/s" + (f" | saved to {result.out_dir}"
                                                                       if result.out_dir else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
