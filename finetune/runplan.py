"""The plan a researcher checks before spending GPU hours: a resolved run, its data and its cost, as JSON or text.

`run_plan` is what `python -m finetune.trial --dry-run` prints and what `search/run.py --dry-run` extends with
the scheduler, resources and trials. Building it reads no weights and starts nothing: model configs come from the
bundled copies (or a local folder), tokenizers only from this machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from finetune.cost import Batches, GpuModel, bound_batches, measured_batches, trial_cost
from finetune.designpoint import DesignPoint
from finetune.runconfig import RunConfig

FLOPS_COUNTED = ("matrix products, 2 FLOPs per multiply-add: forward; input gradients only where the input depends on "
                 "a trainable parameter; weight gradients only for trainable matrices (none for the frozen backbone)")
NOT_COUNTED = "evaluation (decoding the dev subset), element-wise ops, softmax, LayerNorm, optimizer update"


def model_name(run: RunConfig) -> str:
    task = run.task
    return run.train.model or (f"tiny random {task.tiny.family} (built from config)" if task.generated else task.model)


def batches_for(run: RunConfig) -> tuple[Batches, str]:
    """Measured shapes where possible, else the upper bound; with the reason a measurement was not possible."""
    measured, why = measured_batches(run)
    return (measured, "") if measured is not None else (bound_batches(run), why)


def run_plan(run: RunConfig, designs: Sequence[tuple[str, DesignPoint]], model_config: Any, gpu: GpuModel,
             batches: Batches | None = None) -> dict[str, Any]:
    """The resolved run and the cost of each design in `designs` at the run's max_steps (one JSON-able dict)."""
    batches, why = (batches, "") if batches is not None else batches_for(run)
    costs = [trial_cost(name, design, model_config, run, batches, gpu) for name, design in designs]
    out = run.to_dict()
    cfg = run.train
    per_step = batches.tokens * cfg.grad_accum * run.world
    return {"task": run.task.name, "model": model_name(run), "max_steps": cfg.max_steps, "eval_every": cfg.eval_every,
            "length": out["length"], "interval": out["interval"], "data": out["data"], "train": out["train"],
            "origin": out["origin"], "sampled": out["sampled"], "world": run.world,
            "cost": {"basis": batches.basis, "not_measured": why or None, "gpu": gpu.name, "peak_flops": gpu.peak,
                     "utilization": gpu.utilization, "tokens_per_step": per_step, "counted": FLOPS_COUNTED,
                     "not_counted": NOT_COUNTED, "per_trial": [c.to_dict() for c in costs]}}


def run_lines(plan: dict[str, Any]) -> list[str]:
    """The run part of a plan as text: what trains on what, for how long, with which settings and from where."""
    d, t = plan["data"], plan["train"]
    batch = (f"{t['max_tokens']:,} padded tokens" + (f" (at most {t['batch_size']} rows)" if t["batch_size"] else "")
             if t["max_tokens"] else f"{t['batch_size']} rows")
    lines = [f"task      {plan['task']}    model {plan['model']}",
             f"data      {d['source']}: {d['where']}  ({d['train_rows']:,} training rows, {d['eval_rows']:,} dev rows "
             f"per evaluation; {d['basis']})",
             f"length    {plan['length']}",
             f"evaluate  {plan['interval']}",
             f"batches   {batch} × grad_accum {t['grad_accum']} × {plan['world']} worker(s) per optimizer step",
             f"select    the checkpoint with the best {t['select_metric']} ({t['select_mode']}) counts; the last-step "
             "score is reported beside it",
             "settings  (origin: recipe < space < --set; * sampled per trial)"]
    for key in sorted(plan["origin"]):
        sampled = key in plan["sampled"]
        value = "sampled per trial" if sampled else str(t[key])
        lines.append(f"  {'*' if sampled else ' '} {key:<18} {value:<24} {plan['origin'][key]}")
    return lines


def cost_lines(plan: dict[str, Any]) -> list[str]:
    c = plan["cost"]
    lines = [f"cost      per trial at {plan['max_steps']:,} steps, GPU-hours on {c['gpu']} "
             f"({c['peak_flops'] / 1e12:,.0f} TFLOP/s bf16 peak) at an assumed {100 * c['utilization']:.0f}% "
             "utilisation (pass --gpu/--utilization; measure with benchmarks/gpu_check.sh)",
             f"  tokens  {c['basis']}" + (f"; not measured: {c['not_measured']}" if c["not_measured"] else ""),
             f"  FLOPs   {c['counted']}; not counted: {c['not_counted']}"]
    for tc in c["per_trial"]:
        lines.append(f"  {tc['design']:<22} {tc['tokens']:>10.3g} tokens  {tc['flops']:>10.3g} FLOPs  "
                     f"{tc['gpu_hours']:>9.3g} GPU-h")
    return lines
