"""Run one trial alone: `python -m finetune.trial --preset mam_glue --dataset sst2 --model minilm --data-dir DIR`.

Trains one design point on one task with a progress bar and prints a one-line result. The design is a preset name
or a YAML file in the nested design-point form; any training setting can be overridden with `--set key=value`, on
top of the task's recipe. `--dry-run` resolves and checks everything and prints the plan and its cost instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml
from tqdm import tqdm

from finetune.designpoint import DesignPoint
from finetune.gpus import DEFAULT_GPU, DEFAULT_UTILIZATION
from finetune.presets import get_preset
from finetune.runconfig import RunConfig, resolve_run
from finetune.trainconfig import parse_overrides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petl-trial", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="a named method of the paper (petl-count --list-presets)")
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
                   help="override any training setting, e.g. --set lr=3e-4 --set epochs=3 (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve and validate everything, print the plan and its cost, train nothing")
    p.add_argument("--gpu", default=DEFAULT_GPU, help=f"GPU the cost estimate assumes (default {DEFAULT_GPU})")
    p.add_argument("--utilization", type=float, default=DEFAULT_UTILIZATION,
                   help=f"fraction of the GPU's peak the estimate assumes (default {DEFAULT_UTILIZATION})")
    p.add_argument("--json", action="store_true", help="print the result (or the plan) as one JSON object")
    return p


def resolve(args: argparse.Namespace) -> tuple[str, DesignPoint, RunConfig]:
    """The design and the run, resolved once: the recipe, then --set (the step flags belong to that layer)."""
    name = args.preset or Path(args.design).stem
    design = (get_preset(args.preset).design if args.preset
              else DesignPoint.from_dict(yaml.safe_load(Path(args.design).read_text())))
    overrides = parse_overrides(args.set)
    for key, value in (("max_steps", args.max_steps), ("eval_every", args.eval_every)):
        if value is not None:
            overrides.pop("epochs" if key == "max_steps" else "eval_epochs", None)
            overrides[key] = value
    return name, design, resolve_run(args.dataset, model=args.model, data_dir=args.data_dir, overrides=overrides)


def dry_run(name: str, design: DesignPoint, run: RunConfig, args: argparse.Namespace) -> int:
    # deferred on purpose: accounting, cost and models load torch and transformers; --help needs neither
    from finetune.accounting import count_params
    from finetune.cost import GpuModel
    from finetune.models import check_fit, config_for
    from finetune.runplan import cost_lines, run_lines, run_plan

    config = config_for(run.task, run.train.model)
    check_fit(run.task, config, design, run.train.max_length, run.train.max_target_length)
    counts = count_params(design, config, run.task.kind)
    plan = run_plan(run, [(name, design)], config, GpuModel.named(args.gpu, args.utilization))
    plan.update(rungs=[], trials=1, design={"name": name, "spec": design.to_dict(), "fraction": counts.fraction,
                                            "stored": counts.stored, "trainable": counts.trainable})
    if args.json:
        print(json.dumps(plan, default=str))
        return 0
    print("\n".join([f"plan: one trial of {name} ({100 * counts.fraction:.3f}% of the backbone stored, "
                     f"{counts.trainable:,} trainable)", *run_lines(plan), *cost_lines(plan),
                     "nothing was trained (--dry-run)"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        name, design, run = resolve(args)
        cfg = run.trial_config({}, args.out)  # the trial's one TrainConfig
        if args.dry_run:
            return dry_run(name, design, run, args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from finetune.loop import train  # deferred on purpose: torch and the training stack, after argument errors
    from finetune.reporter import TrialFailure

    bar = tqdm(total=cfg.max_steps, desc=f"{name} on {cfg.task}", unit="step", disable=args.json)

    def on_step(step: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(0)

    try:
        result = train(design, cfg, on_step=on_step)
    except TrialFailure as err:
        print(f"failed: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    line = {"task": cfg.task, "score": result.selected_score, "selected_step": result.selected_step,
            "last_score": result.score, "step": result.step, "select_metric": cfg.select_metric,
            "fraction": result.counts.fraction, "stored": result.counts.stored, "trainable": result.counts.trainable,
            "tokens_per_s": result.last.get("tokens_per_s"), "out": result.out_dir}
    if args.json:
        print(json.dumps(line))
        return 0
    print(f"{cfg.task}: score {result.selected_score:.4f} at step {result.selected_step} (selected by "
          f"{cfg.select_metric}, {cfg.select_mode}; {result.score:.4f} at the last step {result.step}) | "
          f"{result.counts.stored:,} stored params = {100 * result.counts.fraction:.3f}% of the backbone | "
          f"{result.last.get('tokens_per_s', 0):,.0f} tokens/s" + (f" | saved to {result.out_dir}"
                                                                   if result.out_dir else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
